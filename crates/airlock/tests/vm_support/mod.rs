//! What the VM tests share: why a VM test cannot run (`missing`, `require_vm!`: every vm*.rs); the state
//! directory (the initramfs cache in it is built once), TCG, the QEMU of a run and cgroup files (vm_limits.rs and
//! vm_escape.rs; the other files keep state directories of their own).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{airlock_path, is_root};

/// The state directory of these tests; sandbox names carry the pid.
pub fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-limits-test-state")
}

/// Why a VM test can't run, if it can't: no QEMU, no guest kernel, not root.
pub fn missing() -> Option<String> {
    if !is_root() {
        return Some("the VM tests run as root".into());
    }
    let arch = std::env::consts::ARCH;
    if Command::new(format!("qemu-system-{arch}")).arg("--version").output().is_err() {
        return Some(format!("qemu-system-{arch} is not installed (apt-get install qemu-system-x86)"));
    }
    let kernel = std::fs::read_dir("/boot").ok().and_then(|entries| {
        entries.flatten().find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-")
                .is_some_and(|v| Path::new("/lib/modules").join(v).join("modules.dep").is_file())
        })
    });
    if kernel.is_none() {
        return Some("no /boot/vmlinuz-VERSION with /lib/modules/VERSION (apt-get install linux-image-amd64)".into());
    }
    None
}

#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(why) = $crate::vm_support::missing() {
            skip_or_fail!("{why}");
        }
    };
}

/// `airlock ARGS` for a TCG guest with the tests' state directory.
pub fn airlock_cmd(args: &[&str]) -> Command {
    airlock_cmd_in(&state_dir(), args)
}

/// `airlock ARGS` for a TCG guest with the state directory `state` (a test file that keeps its own).
pub fn airlock_cmd_in(state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(airlock_path());
    cmd.args(args).env("AIRLOCK_STATE_DIR", state).env("AIRLOCK_VM_ACCEL", "tcg").env_remove("AIRLOCK_VM_KERNEL");
    cmd
}

/// `airlock ARGS` with `input` on its standard input, to its end.
pub fn vm(args: &[&str], input: &[u8]) -> Output {
    output_with_input(airlock_cmd(args), input)
}

/// Runs `cmd` with `input` on its standard input, to its end.
pub fn output_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A run in progress: airlock, its output read line by line, and its QEMU.
pub struct Running {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub qemu: i32,
}

impl Running {
    /// Starts `airlock ARGS` (standard input piped) and waits for the command's first line.
    pub fn start(args: &[&str]) -> (Running, String) {
        let mut child =
            airlock_cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let qemus = qemus_of(child.id());
        assert_eq!(qemus.len(), 1, "airlock's qemu while the guest runs: {qemus:?} (first line {line:?})");
        let qemu = qemus[0];
        (Running { child, out, qemu }, line)
    }
}

/// The QEMU processes whose parent is `parent`.
pub fn qemus_of(parent: u32) -> Vec<i32> {
    pids()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("qemu-system")
                && status.lines().any(|l| l.strip_prefix("PPid:").is_some_and(|p| p.trim() == parent.to_string()))
        })
        .collect()
}

fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// Whether `pid` is a QEMU (a zombie waiting for its reaper is gone as far as the guest goes).
pub fn is_qemu(pid: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.starts_with("qemu-system") && alive(pid)
}

/// Waits (a QEMU with its guest's memory takes a moment to go) until `pid` is no QEMU; false if it stays.
pub fn qemu_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while is_qemu(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// Waits up to `secs` for `pid` to be gone.
pub fn wait_gone(pid: i32, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// The cgroup directories of `pid` that carry a controller: (controller, directory), from `/proc/PID/cgroup`;
/// on cgroup v2 one entry, controller `""`. Hybrid hosts (v1 controllers, cgroup2 without any) give the v1 ones.
pub fn cgroup_dirs(pid: i32) -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        // The mount of this hierarchy: cgroup2 for id 0, else the v1 mount whose options carry the controllers.
        let mount = mounts.lines().find_map(|m| {
            let fields: Vec<&str> = m.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let (fstype, super_opts) = (fields[sep + 1], fields.get(sep + 3).copied().unwrap_or(""));
            let matches = if id == "0" {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && controllers.split(',').all(|c| super_opts.split(',').any(|o| o == c))
            };
            matches.then(|| PathBuf::from(fields[4]))
        });
        if let Some(mount) = mount {
            let dir = mount.join(path.trim_start_matches('/'));
            if id != "0" || dir.join("memory.max").exists() || dir.join("pids.max").exists() {
                dirs.push((controllers.to_string(), dir));
            }
        }
    }
    dirs
}

/// The directory of `pid`'s cgroup that has `file` (`memory.limit_in_bytes`, `memory.max`, ...).
pub fn cgroup_file(pid: i32, file: &str) -> Option<PathBuf> {
    cgroup_dirs(pid).into_iter().map(|(_, d)| d.join(file)).find(|f| f.exists())
}

/// Gives `dir` and what it holds (one level) to an ordinary user (uid and gid 4242): with `--rootfs host` in a VM,
/// a workspace owned by root is not the sandbox's to write (its root is no owner of anything shared from the
/// host, as on a host that cannot idmap the workspace); one owned by a user is written as that user.
pub fn user_owned(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::os::unix::fs::lchown(entry.unwrap().path(), Some(4242), Some(4242)).unwrap();
    }
    std::os::unix::fs::chown(dir, Some(4242), Some(4242)).unwrap();
}

/// Stops and removes the sandbox `name` of the state directory `state` whatever a failed assertion left.
pub struct Cleanup {
    state: PathBuf,
    name: String,
}

impl Cleanup {
    pub fn new(state: &Path, name: &str) -> Cleanup {
        Cleanup { state: state.to_path_buf(), name: name.to_string() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = airlock_cmd_in(&self.state, &["stop", &self.name]).output();
        let _ = airlock_cmd_in(&self.state, &["rm", &self.name]).output();
    }
}
