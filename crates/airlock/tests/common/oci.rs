//! Helpers for the OCI runtime tests: a containerd of the test's own (Debian's, its config, state, sockets and
//! airlock state under a temporary directory), a busybox root directory, and the two-line wrapper that makes
//! `airlock oci` containerd's `--runc-binary`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{airlock_path, TempDir};

/// Why containerd cannot be used here, if it cannot.
pub fn containerd_missing() -> Option<String> {
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !crate::common::on_path(tool) {
            return Some(format!("{tool} is not installed (scripts/setup-debian installs containerd)"));
        }
    }
    if !crate::common::is_root() {
        return Some("containerd runs as root".to_string());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox is missing (busybox-static)".to_string());
    }
    None
}

/// containerd, started by the test, stopped (and its directory removed) on drop.
pub struct Containerd {
    pub dir: TempDir,
    child: Child,
    pub address: PathBuf,
    /// The wrapper: `exec airlock oci "$@"`.
    pub wrapper: PathBuf,
    /// airlock's state directory for the containers' sandboxes.
    pub airlock_state: PathBuf,
    /// The containerd namespace the test's containers are in (so runc's --root is /run/containerd/runc/NS).
    pub namespace: String,
    pub rootfs: PathBuf,
}

impl Containerd {
    pub fn start(tag: &str) -> Containerd {
        let dir = TempDir::new(&format!("oci-{tag}"));
        let d = dir.path();
        let address = d.join("containerd.sock");
        let airlock_state = d.join("airlock-state");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{grpc}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  address = \"{debug}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            grpc = address.display(),
            ttrpc = d.join("ttrpc.sock").display(),
            debug = d.join("debug.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let wrapper = d.join("airlock-runc");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} oci \"$@\"\n", airlock_path().display())).unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            // Inherited by the shims, and so by `airlock oci`: the sandboxes' state stays in the test's directory.
            .env("AIRLOCK_STATE_DIR", &airlock_state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let rootfs = crate::common::busybox_rootfs(d);
        let namespace = format!("airlock-{tag}-{}", std::process::id());
        let containerd = Containerd { dir, child, address, wrapper, airlock_state, namespace, rootfs };
        let started = Instant::now();
        loop {
            let o = containerd.ctr(&["version"]);
            if o.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "containerd did not start: {}",
                std::fs::read_to_string(containerd.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    /// `ctr --address A --namespace NS ARGS…`, stdin closed.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.address).arg("--namespace").arg(&self.namespace).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// `ctr run` with the wrapper as runc, the `flags`, the busybox root (`--rootfs` is a switch: the root is
    /// the first positional argument) and the container's `id`; the command follows.
    pub fn run_args<'a>(&'a self, flags: &[&'a str], id: &'a str) -> Vec<&'a str> {
        let mut args = vec!["run", "--runc-binary", self.wrapper.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.extend(["--rootfs", self.rootfs.to_str().unwrap(), id]);
        args
    }

    /// runc's --root for this namespace, as containerd's runc shim passes it.
    pub fn runc_root(&self) -> PathBuf {
        PathBuf::from("/run/containerd/runc").join(&self.namespace)
    }

    /// The container's `--log` (JSON lines), while the task exists.
    pub fn task_log(&self, id: &str) -> String {
        let path =
            self.dir.path().join("state/io.containerd.runtime.v2.task").join(&self.namespace).join(id).join("log.json");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// `airlock ARGS…` with the containers' airlock state directory.
    pub fn airlock(&self, args: &[&str]) -> Output {
        Command::new(airlock_path()).args(args).env("AIRLOCK_STATE_DIR", &self.airlock_state).output().unwrap()
    }

    /// The names of the sandboxes airlock keeps for the containers.
    pub fn sandboxes(&self) -> Vec<String> {
        match std::fs::read_dir(self.airlock_state.join("sandboxes")) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// What a container may leave behind once deleted: its runc state, its sandbox's state, airlock processes
    /// working for this test's containers, mounts of its root, cgroups named after its sandbox. Empty when clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.runc_root()) {
            left.extend(entries.flatten().map(|e| format!("runc state {}", e.path().display())));
        }
        left.extend(self.sandboxes().into_iter().map(|s| format!("sandbox state {s}")));
        let root = self.runc_root();
        let root = root.to_str().unwrap();
        let state = self.airlock_state.to_str().unwrap();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let environ = String::from_utf8_lossy(&environ);
            let ours = (cmdline.contains(root) && cmdline.contains(" oci ")) || environ.contains(state);
            // containerd and its shims carry the state directory in their environment too; they are not leftovers.
            let containerd = cmdline.starts_with("containerd ") || cmdline.contains("containerd-shim");
            if ours && !containerd {
                left.push(format!("process {}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.str();
        left.extend(mounts.lines().filter(|l| l.contains(dir)).map(|l| format!("mount {l}")));
        left
    }

    /// Waits (a few seconds at most) until nothing of container `id` is left behind (see [`Self::leftovers`], and
    /// cgroups named after its sandbox); the leftovers otherwise.
    pub fn wait_clean(&self, id: &str) -> Vec<String> {
        let started = Instant::now();
        loop {
            let mut left = self.leftovers();
            let found = Command::new("find")
                .args(["/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", &format!("*oci-*-{id}")])
                .output()
                .unwrap();
            left.extend(String::from_utf8_lossy(&found.stdout).lines().map(|l| format!("cgroup {l}")));
            if left.is_empty() || started.elapsed() > Duration::from_secs(10) {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Whatever a failed test left running in the namespace goes first.
        if let Ok(o) = self.ctr_command(&["task", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.ctr_command(&["task", "kill", "-s", "9", id]).output();
                let _ = self.ctr_command(&["task", "delete", "-f", id]).output();
            }
        }
        if let Ok(o) = self.ctr_command(&["container", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = self.ctr_command(&["container", "delete", id]).output();
            }
        }
        let _ = self.ctr_command(&["namespace", "remove", &self.namespace]).output();
        // The shim makes runc's --root for the namespace and leaves it, empty.
        let _ = std::fs::remove_dir(self.runc_root());
        // Our own child, by its pid: SIGTERM, then SIGKILL if it lingers.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
