//! Helpers for the Docker tests: a dockerd of the test's own (Debian's docker.io 20.10, which starts its own
//! containerd under the test's --exec-root), with airlock registered as a runtime through the two-line wrapper a
//! user writes, and a busybox image imported from a tarball. No host network changes: no iptables, no bridge;
//! containers run with `--network none`. Everything lives under one temporary directory, and the guard's drop
//! stops dockerd (and whatever it left: containerd, shims, mounts) and removes it, whether the test passed or not.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{airlock_path, TempDir};

/// Debian's client, the same version as the daemon (a newer /usr/local/bin/docker may not talk to dockerd 20.10).
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The image every test imports.
pub const IMAGE: &str = "airlock-test-busybox:latest";

/// Why Docker cannot be used here, if it cannot.
pub fn docker_missing() -> Option<String> {
    for path in [DOCKER, DOCKERD] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (scripts/setup-debian installs docker.io)"));
        }
    }
    for tool in ["containerd", "containerd-shim-runc-v2", "runc"] {
        if !crate::common::on_path(tool) {
            return Some(format!("{tool} is not installed (scripts/setup-debian installs it)"));
        }
    }
    if !crate::common::is_root() {
        return Some("dockerd runs as root".to_string());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (busybox-static)".to_string());
    }
    None
}

/// dockerd, started by the test; stopped, with everything it started, on drop.
pub struct Dockerd {
    pub dir: TempDir,
    child: Child,
    /// `unix://…/docker.sock`, for DOCKER_HOST.
    pub host: String,
    /// The wrapper registered as runtime `airlock`: `exec airlock oci "$@"` (with the state directory below).
    pub wrapper: PathBuf,
    /// airlock's state directory for the containers' sandboxes.
    pub airlock_state: PathBuf,
}

impl Dockerd {
    /// Starts dockerd with its default storage driver, overlay2: each container's root is an overlayfs mount
    /// (see [`Self::start_with_driver`]).
    pub fn start(tag: &str) -> Dockerd {
        Dockerd::start_with_driver(tag, "overlay2")
    }

    /// Starts dockerd with its own data root, exec root (its containerd's state and socket go there), pid file and
    /// socket, the given storage driver, and runtime `airlock`; waits until it answers, and imports [`IMAGE`].
    pub fn start_with_driver(tag: &str, storage_driver: &str) -> Dockerd {
        let dir = TempDir::new(&format!("docker-{tag}"));
        let d = dir.path();
        let airlock_state = d.join("airlock-state");
        let wrapper = d.join("airlock-runtime");
        // AIRLOCK_STATE_DIR in the wrapper, not dockerd's environment: dockerd's containerd and the shims do not
        // promise to pass their environment on, the wrapper always runs.
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexport AIRLOCK_STATE_DIR={}\nexec {} oci \"$@\"\n",
                airlock_state.display(),
                airlock_path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = d.join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let namespace = format!("airlock-{tag}-{}", std::process::id());
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args(["-H", &host])
            .args(["--storage-driver", storage_driver])
            // No host network changes: no NAT rules, no docker0.
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none"])
            .args(["--containerd-namespace", &namespace, "--containerd-plugins-namespace", &format!("{namespace}-p")])
            .arg("--add-runtime")
            .arg(format!("airlock={}", wrapper.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let dockerd = Dockerd { dir, child, host, wrapper, airlock_state };
        let started = Instant::now();
        loop {
            if dockerd.docker(&["version"]).status.success() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "dockerd did not start: {}", dockerd.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        let rootfs = crate::common::busybox_rootfs(dockerd.dir.path());
        let tarball = dockerd.dir.path().join("rootfs.tar");
        let tar = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg(".").status().unwrap();
        assert!(tar.success(), "tar of the busybox root");
        let import = dockerd.docker(&["import", tarball.to_str().unwrap(), IMAGE]);
        assert!(import.status.success(), "docker import: {}", String::from_utf8_lossy(&import.stderr));
        dockerd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS…` against this daemon, stdin closed, at most two minutes.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["120", DOCKER]).args(args).env("DOCKER_HOST", &self.host).stdin(Stdio::null());
        cmd
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args).output().unwrap()
    }

    /// The runtimes' `--root` directory for this daemon's containers (dockerd names it after runc for every
    /// runtime it hands to containerd's runc shim).
    pub fn runtime_roots(&self) -> PathBuf {
        self.dir.path().join("exec/runtime-runc")
    }

    /// The names of the sandboxes airlock keeps for the containers.
    pub fn sandboxes(&self) -> Vec<String> {
        match std::fs::read_dir(self.airlock_state.join("sandboxes")) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Pids of the processes whose command line or environment names this test's directory, but for the daemons
    /// themselves (dockerd, its containerd) and containerd's shims when `with_daemons` is false.
    pub fn processes(&self, with_daemons: bool) -> Vec<(u32, String)> {
        let dir = self.dir.str();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == std::process::id() {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let ours = cmdline.contains(dir) || String::from_utf8_lossy(&environ).contains(dir);
            let daemon = cmdline.starts_with(DOCKERD)
                || cmdline.starts_with("dockerd ")
                || cmdline.starts_with("containerd ")
                || cmdline.contains("containerd-shim")
                || cmdline.starts_with("timeout ");
            if ours && (with_daemons || !daemon) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// Mount points under this test's directory, deepest (latest) first.
    pub fn mounts(&self) -> Vec<String> {
        let dir = self.dir.str();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(dir))
            .collect();
        points.reverse();
        points
    }

    /// What container `id` (the full id) may leave behind once removed: airlock processes, sandbox state, runtime
    /// state under the runtimes' --root, mounts naming it or of its sandbox. Waits a few seconds for it to go;
    /// empty when clean.
    pub fn leftovers(&self, id: &str) -> Vec<String> {
        let started = Instant::now();
        loop {
            let mut left = Vec::new();
            left.extend(self.processes(false).into_iter().map(|(pid, cmd)| format!("process {pid}: {cmd}")));
            left.extend(self.sandboxes().into_iter().map(|s| format!("sandbox state {s}")));
            let found = Command::new("find").arg(self.runtime_roots()).args(["-name", id]).output().unwrap();
            left.extend(String::from_utf8_lossy(&found.stdout).lines().map(|l| format!("runtime state {l}")));
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            left.extend(mountinfo.lines().filter(|l| l.contains(id)).map(|l| format!("mount {l}")));
            if left.is_empty() || started.elapsed() > Duration::from_secs(10) {
                return left;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // The containers a failed test left go first, so dockerd stops them through the runtime.
        if let Ok(o) = self.docker_command(&["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker(&args);
            }
        }
        // Our own child, by its pid: SIGTERM (dockerd then stops its containerd), SIGKILL if it lingers.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let started = Instant::now();
        let mut exited = false;
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // What outlived it and names this directory (its containerd, shims, airlock processes), by pid.
        let started = Instant::now();
        loop {
            let left = self.processes(true);
            if left.is_empty() {
                break;
            }
            let signal = if started.elapsed() < Duration::from_secs(5) { "-TERM" } else { "-KILL" };
            for (pid, _) in &left {
                let _ = Command::new("kill").arg(signal).arg(pid.to_string()).status();
            }
            if started.elapsed() > Duration::from_secs(15) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for point in self.mounts() {
            let _ = Command::new("umount").arg("-l").arg(&point).status();
        }
        // TempDir's drop removes the directory.
    }
}
