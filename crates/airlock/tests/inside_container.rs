//! airlock itself inside a container (issue 13): a runc container with runc's default settings (`runc spec`),
//! with Docker's default capabilities and seccomp profile, and with the fixes README "Inside containers"
//! documents. Where the container's settings stop airlock, it fails closed (125) naming the fix; with the fix it
//! runs with its isolation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{code, stderr, stdout, TempDir};
use serde_json::{json, Value};

/// Docker's default capabilities (moby's `oci/caps/defaults.go`).
const DOCKER_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The profile airlock ships, and the calls it documents adding to Docker's default.
/// airlock's executables, side by side at `/` in the containers as they are installed (`airlock` finds the
/// others next to itself): name, and the build's file.
const AIRLOCK_BINARIES: [(&str, &str); 3] = [
    ("airlock", env!("CARGO_BIN_EXE_airlock")),
    ("airlock-netgw", env!("CARGO_BIN_EXE_airlock-netgw")),
    ("airlock-server", env!("CARGO_BIN_EXE_airlock-server")),
];

const SHIPPED_PROFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/docker/airlock-seccomp.json");
const PROFILE_ADDITIONS: &[&str] = &[
    "clone",
    "clone3",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "sethostname",
];

fn runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

macro_rules! require_runc {
    () => {{
        if !common::is_root() {
            skip_or_fail!("runc containers need root");
        }
        match runc() {
            Some(runc) => runc,
            None => skip_or_fail!("runc is not installed (apt-get install runc)"),
        }
    }};
}

/// An OCI bundle from `runc spec` (runc's defaults: its capabilities, masked and read-only /proc paths, no user
/// namespace, no seccomp) whose read-only rootfs holds the host's system directories and the airlock binary,
/// with tmpfs for /tmp, /run and /root. Runs one container at a time; `Drop` deletes it whatever happened.
struct Bundle {
    runc: PathBuf,
    dir: TempDir,
    config: Value,
    id: String,
}

impl Bundle {
    fn new(runc: &Path, test: &str) -> Bundle {
        let dir = TempDir::new(&format!("inside-{test}"));
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let spec = Command::new(runc).arg("spec").current_dir(&bundle).output().unwrap();
        assert!(spec.status.success(), "runc spec: {}", stderr(&spec));
        let mut config: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        // Only the airlock binaries from the host's build tree: a bind of a directory above the bundle would bring
        // the container's own unmasked /proc mount into it, and the kernel would then allow a fresh /proc.
        for name in ["usr", "lib", "lib64", "bin", "sbin", "etc", "tmp", "run", "root", "proc", "dev", "sys"] {
            std::fs::create_dir_all(rootfs.join(name)).unwrap();
        }
        for (name, _) in AIRLOCK_BINARIES {
            std::fs::write(rootfs.join(name), b"").unwrap();
        }
        let mounts = config["mounts"].as_array_mut().unwrap();
        for name in ["usr", "lib", "lib64", "bin", "sbin", "etc"] {
            if Path::new("/").join(name).exists() {
                mounts.push(json!({"destination": format!("/{name}"), "type": "bind", "source": format!("/{name}"),
                                   "options": ["rbind", "ro"]}));
            }
        }
        for (name, source) in AIRLOCK_BINARIES {
            mounts.push(json!({"destination": format!("/{name}"), "type": "bind", "source": source,
                               "options": ["bind", "ro"]}));
        }
        for name in ["/tmp", "/run", "/root"] {
            mounts.push(json!({"destination": name, "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "mode=1777"]}));
        }
        config["root"] = json!({"path": "rootfs", "readonly": true});
        config["process"]["terminal"] = json!(false);
        config["process"]["env"]
            .as_array_mut()
            .unwrap()
            .extend([json!("AIRLOCK_STATE_DIR=/tmp/airlock-state"), json!("HOME=/tmp")]);
        let id = format!("airlock-inside-{test}-{}", std::process::id());
        Bundle { runc: runc.to_path_buf(), dir, config, id }
    }

    fn root_dir(&self) -> PathBuf {
        self.dir.path().join("runc-root")
    }

    fn user(&mut self, uid: u32) -> &mut Self {
        self.config["process"]["user"] = json!({"uid": uid, "gid": uid});
        self
    }

    /// The capabilities runc's default has, plus `extra` (or exactly Docker's, with `docker`).
    fn caps(&mut self, docker: bool, extra: &[&str]) -> &mut Self {
        let mut caps: Vec<String> = match docker {
            true => DOCKER_CAPS.iter().map(|c| c.to_string()).collect(),
            false => serde_json::from_value(self.config["process"]["capabilities"]["bounding"].clone()).unwrap(),
        };
        caps.extend(extra.iter().map(|c| c.to_string()));
        for set in ["bounding", "effective", "permitted"] {
            self.config["process"]["capabilities"][set] = json!(caps);
        }
        self
    }

    /// README's fix for the masked /proc: runc's masked and read-only paths without their /proc entries.
    fn unmask_proc(&mut self) -> &mut Self {
        for key in ["maskedPaths", "readonlyPaths"] {
            let kept: Vec<Value> = self.config["linux"][key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| !p.as_str().unwrap().starts_with("/proc"))
                .cloned()
                .collect();
            self.config["linux"][key] = json!(kept);
        }
        self
    }

    fn seccomp(&mut self, docker_profile: &Value) -> &mut Self {
        let caps: Vec<String> =
            serde_json::from_value(self.config["process"]["capabilities"]["bounding"].clone()).unwrap();
        self.config["linux"]["seccomp"] = oci_seccomp(docker_profile, &caps);
        self
    }

    /// Runs `args` as the container's process and deletes the container.
    fn run(&mut self, args: &[&str]) -> Output {
        self.config["process"]["args"] = json!(args);
        let bundle = self.dir.path().join("bundle");
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
        let out = Command::new("timeout")
            .args(["120", self.runc.to_str().unwrap(), "--root", self.root_dir().to_str().unwrap(), "run", "--bundle"])
            .arg(&bundle)
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        self.delete();
        out
    }

    fn delete(&self) {
        let _ = Command::new(&self.runc)
            .args(["--root", self.root_dir().to_str().unwrap(), "delete", "--force", &self.id])
            .output();
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A Docker seccomp profile as runc's `linux.seccomp` for x86-64 and these capabilities: rules included for
/// other capabilities or architectures dropped, as dockerd does before handing the profile to runc.
fn oci_seccomp(profile: &Value, caps: &[String]) -> Value {
    let arch = "amd64";
    let has = |list: &Value, what: &dyn Fn(&str) -> bool| {
        list.as_array().is_some_and(|l| l.iter().any(|v| what(v.as_str().unwrap())))
    };
    let mut syscalls = Vec::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        let (inc, exc) = (&rule["includes"], &rule["excludes"]);
        let caps_missing = inc["caps"].as_array().is_some_and(|l| l.iter().any(|c| !caps.iter().any(|h| h == c)));
        let other_arch = inc["arches"].as_array().is_some_and(|l| !l.iter().any(|a| a == arch));
        let excluded = has(&exc["caps"], &|c| caps.iter().any(|h| h == c)) || has(&exc["arches"], &|a| a == arch);
        if caps_missing || other_arch || excluded {
            continue;
        }
        let mut oci = json!({"names": rule["names"], "action": rule["action"]});
        if let Some(args) = rule["args"].as_array().filter(|a| !a.is_empty()) {
            oci["args"] = json!(args);
        }
        if !rule["errnoRet"].is_null() {
            oci["errnoRet"] = rule["errnoRet"].clone();
        }
        syscalls.push(oci);
    }
    let x86 = profile["archMap"].as_array().unwrap().iter().find(|a| a["architecture"] == "SCMP_ARCH_X86_64").unwrap();
    let mut architectures = vec![x86["architecture"].clone()];
    architectures.extend(x86["subArchitectures"].as_array().unwrap().iter().cloned());
    json!({"defaultAction": profile["defaultAction"], "defaultErrnoRet": profile["defaultErrnoRet"],
           "architectures": architectures, "syscalls": syscalls})
}

fn shipped_profile() -> Value {
    serde_json::from_slice(&std::fs::read(SHIPPED_PROFILE).unwrap()).unwrap()
}

/// Docker's default profile, recovered from the shipped one: without airlock's rule, and with Docker's answer
/// to clone3 (ENOSYS without CAP_SYS_ADMIN, so that libc falls back to clone, whose flags a filter can see).
fn docker_default_profile() -> Value {
    let mut profile = shipped_profile();
    let syscalls = profile["syscalls"].as_array_mut().unwrap();
    syscalls.retain(|r| !r["comment"].as_str().is_some_and(|c| c.starts_with("airlock:")));
    syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                         "excludes": {"caps": ["CAP_SYS_ADMIN"]}}));
    profile
}

/// The command run in the sandbox: how many processes its /proc shows, its uid map, whether a write to the
/// host's /usr (bound read-only) gets through.
const PROBE_SCRIPT: &str = "echo pids=$(ls /proc | grep -c '^[0-9]'); echo map=$(cat /proc/self/uid_map); \
                            if echo x > /usr/airlock-inside-container-test 2>/dev/null; then echo write=allowed; \
                            else echo write=refused; fi";

fn assert_isolated(o: &Output) {
    let out = stdout(o);
    assert_eq!(code(o), 0, "stdout: {out}\nstderr: {}", stderr(o));
    // The sandbox's own pid namespace: its init, the shell, ls, grep (and the command substitution's shells).
    let pids: u32 = out.lines().find_map(|l| l.strip_prefix("pids=")).unwrap().trim().parse().unwrap();
    assert!(pids <= 6, "the sandbox sees {pids} processes: {out}");
    assert!(out.contains("write=refused"), "{out}");
    assert!(!Path::new("/usr/airlock-inside-container-test").exists());
}

/// The sandbox's uid map as [`PROBE_SCRIPT`] printed it (one line: inside, outside, count).
fn uid_map(o: &Output) -> Vec<u64> {
    let out = stdout(o);
    let line = out.lines().find_map(|l| l.strip_prefix("map=")).unwrap();
    line.split_whitespace().map(|f| f.parse().unwrap()).collect()
}

#[test]
fn runc_defaults_as_root_fail_closed_naming_the_capabilities() {
    let runc = require_runc!();
    let mut bundle = Bundle::new(&runc, "default-root");
    let o = bundle.user(0).run(&["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("airlock: user namespace:"), "{err}");
    for fix in ["CAP_SETUID", "CAP_SETGID", "CAP_SETFCAP", "non-root user"] {
        assert!(err.contains(fix), "{fix} missing in: {err}");
    }
    // doctor names the same fix, and the one for /proc the run would meet next.
    let o = bundle.run(&["/airlock", "doctor"]);
    assert_eq!(code(&o), 1);
    let text = stdout(&o);
    assert!(text.contains("fix: capabilities: give the container CAP_SETUID and CAP_SETGID"), "{text}");
    assert!(text.contains("fix: /proc: start the container with an unmasked /proc"), "{text}");
}

#[test]
fn runc_defaults_as_a_user_fail_closed_naming_the_unmasked_proc() {
    let runc = require_runc!();
    let mut bundle = Bundle::new(&runc, "default-user");
    let o = bundle.user(65534).run(&["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("airlock: cannot mount a fresh /proc: Operation not permitted"), "{err}");
    assert!(err.contains("--security-opt systempaths=unconfined"), "{err}");
    assert!(err.contains("linux.maskedPaths and linux.readonlyPaths"), "{err}");
}

#[test]
fn runc_with_the_documented_fixes_runs_isolated() {
    let runc = require_runc!();
    // As a user: only the /proc fix.
    let mut bundle = Bundle::new(&runc, "fixed-user");
    let o = bundle.user(65534).unmask_proc().run(&["/airlock", "run", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    assert_eq!(uid_map(&o), [65534, 65534, 1]);
    drop(bundle);

    // As root with CAP_SETUID and CAP_SETGID: a full id range, root inside is not root outside.
    let mut bundle = Bundle::new(&runc, "fixed-root");
    bundle.user(0).unmask_proc().caps(false, &["CAP_SETUID", "CAP_SETGID"]);
    let o = bundle.run(&["/airlock", "run", "--net", "none", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    let map = uid_map(&o);
    assert_eq!((map[0], map[2]), (0, 65536), "{map:?}");
    assert!(map[1] >= 0x7000_0000, "root inside maps to an unprivileged host id: {map:?}");
    let o = bundle.run(&["/airlock", "doctor"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // The container's cgroups are read-only: a limit fails closed, naming where to set it instead.
    let o = bundle.run(&["/airlock", "run", "--memory", "64M", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("set the limits on the container itself"), "{}", stderr(&o));
    drop(bundle);

    // As root with CAP_SETFCAP only: root's own id, as rootless, and said so.
    let mut bundle = Bundle::new(&runc, "fixed-setfcap");
    bundle.user(0).unmask_proc().caps(false, &["CAP_SETFCAP"]);
    let o = bundle.run(&["/airlock", "run", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    assert_eq!(uid_map(&o), [0, 0, 1]);
    assert!(stderr(&o).contains("only your own id is mapped"), "{}", stderr(&o));
}

#[test]
fn docker_defaults_fail_closed_and_the_shipped_profile_works() {
    let runc = require_runc!();
    // The shipped profile is Docker's default plus exactly the documented rule.
    let shipped = shipped_profile();
    let added: Vec<&Value> = shipped["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["comment"].as_str().is_some_and(|c| c.starts_with("airlock:")))
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["names"], json!(PROFILE_ADDITIONS));
    assert_eq!(added[0]["action"], "SCMP_ACT_ALLOW");

    // Docker's defaults: its capabilities, its seccomp profile, its masked /proc.
    let mut bundle = Bundle::new(&runc, "docker-default");
    bundle.user(0).caps(true, &[]).seccomp(&docker_default_profile());
    let o = bundle.run(&["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--security-opt seccomp=contrib/docker/airlock-seccomp.json"), "{err}");
    let o = bundle.run(&["/airlock", "doctor"]);
    let text = stdout(&o);
    assert!(text.contains("fix: seccomp: start the container with airlock's seccomp profile"), "{text}");
    assert!(!text.contains("fix: capabilities"), "Docker's capabilities are enough: {text}");
    drop(bundle);

    // The shipped profile alone: the masked /proc still stops it, named.
    let mut bundle = Bundle::new(&runc, "docker-profile");
    bundle.user(0).caps(true, &[]).seccomp(&shipped);
    let o = bundle.run(&["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("systempaths=unconfined"), "{}", stderr(&o));

    // Both fixes: isolated, and `airlock exec` joins a held sandbox without CAP_SYS_PTRACE.
    bundle.unmask_proc();
    let o = bundle.run(&["/airlock", "run", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    let script = "/airlock create held && /airlock exec held -- sh -c 'echo joined; ls /proc | grep -c \"^[0-9]\"'; \
                  status=$?; /airlock rm --force held; exit $status";
    let o = bundle.run(&["sh", "-c", script]);
    assert_eq!(code(&o), 0, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("joined"), "{}", stdout(&o));
}

/// A dockerd of the test's own (Debian's docker.io): its data, state, socket and containerd namespace under a
/// temporary directory, no iptables and no bridge (the containers get `--network none`). Stopped on drop.
struct Dockerd {
    dir: TempDir,
    pid: u32,
}

impl Dockerd {
    fn start(test: &str) -> Result<Dockerd, String> {
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"].into_iter().find(|p| Path::new(p).is_file());
        let docker = Path::new("/usr/bin/docker");
        let (Some(dockerd), true) = (dockerd, docker.is_file()) else {
            return Err("dockerd is not installed (apt-get install docker.io)".into());
        };
        let dir = TempDir::new(&format!("inside-dockerd-{test}"));
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let namespace = format!("airlock-inside-{}", std::process::id());
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("dockerd.pid")])
            .args(["-H", &format!("unix://{}", p("docker.sock")), "--iptables=false", "--ip-masq=false"])
            .args(["--bridge=none", "--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-plugins")])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let daemon = Dockerd { dir, pid: child.id() };
        for _ in 0..120 {
            if daemon.docker(&["version"]).status.success() {
                return Ok(daemon);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let log = std::fs::read_to_string(daemon.dir.path().join("dockerd.log")).unwrap_or_default();
        Err(format!("dockerd did not come up: {}", log.lines().rev().take(3).collect::<Vec<_>>().join(" | ")))
    }

    fn docker(&self, args: &[&str]) -> Output {
        let host = format!("unix://{}", self.dir.path().join("docker.sock").display());
        Command::new("/usr/bin/docker").args(["-H", &host]).args(args).output().unwrap()
    }

    /// An image with only the mount points: the host's system directories and airlock are bound in read-only.
    fn import_empty_image(&self) -> &'static str {
        let tree = self.dir.path().join("image");
        for name in ["usr", "lib", "lib64", "bin", "sbin", "etc", "tmp", "root", "proc", "dev", "sys"] {
            std::fs::create_dir_all(tree.join(name)).unwrap();
        }
        for (name, _) in AIRLOCK_BINARIES {
            std::fs::write(tree.join(name), b"").unwrap();
        }
        let tar = self.dir.path().join("image.tar");
        let made = Command::new("tar").arg("-C").arg(&tree).arg("-cf").arg(&tar).arg(".").output().unwrap();
        assert!(made.status.success(), "tar: {}", stderr(&made));
        let imported = self.docker(&["import", tar.to_str().unwrap(), "airlock-inside-empty:1"]);
        assert!(imported.status.success(), "docker import: {}", stderr(&imported));
        "airlock-inside-empty:1"
    }

    /// `docker run --rm` with the host's system directories and airlock, and `options`.
    fn run(&self, options: &[&str], args: &[&str]) -> Output {
        let mut all: Vec<String> = ["run", "--rm", "--network", "none", "--tmpfs", "/tmp"].map(String::from).to_vec();
        for name in ["usr", "lib", "lib64", "bin", "sbin", "etc"] {
            if Path::new("/").join(name).exists() {
                all.extend(["-v".into(), format!("/{name}:/{name}:ro")]);
            }
        }
        for (name, source) in AIRLOCK_BINARIES {
            all.extend(["-v".into(), format!("{source}:/{name}:ro")]);
        }
        all.extend(["-e".into(), "AIRLOCK_STATE_DIR=/tmp/airlock-state".into()]);
        all.extend(options.iter().map(|o| o.to_string()));
        all.push("airlock-inside-empty:1".into());
        all.extend(args.iter().map(|a| a.to_string()));
        self.docker(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Our own child, by its pid: SIGTERM, then wait for it to stop its containerd and unmount its layers.
        let _ = Command::new("kill").arg(self.pid.to_string()).output();
        for _ in 0..120 {
            if !Path::new(&format!("/proc/{}", self.pid)).exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| s.contains(") Z "))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        // Whatever it left mounted under its directories goes before the directory is removed.
        let root = self.dir.path().to_str().unwrap().to_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut left: Vec<&str> =
            mountinfo.lines().filter_map(|l| l.split_whitespace().nth(4)).filter(|m| m.starts_with(&root)).collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in left {
            let _ = Command::new("umount").args(["-l", mount]).output();
        }
    }
}

#[test]
fn docker_with_its_defaults_fails_closed_and_with_the_documented_options_runs_isolated() {
    if !common::is_root() {
        skip_or_fail!("a dockerd of the test's own needs root");
    }
    let daemon = match Dockerd::start("fixes") {
        Ok(daemon) => daemon,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    daemon.import_empty_image();

    // Docker's defaults: its seccomp profile refuses the namespaces; the fix is named.
    let o = daemon.run(&[], &["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--security-opt seccomp=contrib/docker/airlock-seccomp.json"), "{}", stderr(&o));

    // The shipped profile: then the masked /proc, named.
    let profile = format!("seccomp={SHIPPED_PROFILE}");
    let o = daemon.run(&["--security-opt", &profile], &["/airlock", "run", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--security-opt systempaths=unconfined"), "{}", stderr(&o));

    // Both: isolated, as root (a full id range: Docker's defaults have CAP_SETUID and CAP_SETGID) and as a user.
    let fixed = ["--security-opt", profile.as_str(), "--security-opt", "systempaths=unconfined"];
    let o = daemon.run(&fixed, &["/airlock", "run", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    let map = uid_map(&o);
    assert_eq!((map[0], map[2]), (0, 65536), "{map:?}");
    assert!(map[1] >= 0x7000_0000, "{map:?}");
    let as_user = [&fixed[..], &["--user", "65534:65534"]].concat();
    let o = daemon.run(&as_user, &["/airlock", "run", "--", "sh", "-c", PROBE_SCRIPT]);
    assert_isolated(&o);
    assert_eq!(uid_map(&o), [65534, 65534, 1]);

    // `--net allow` needs the TUN device, which Docker does not pass by default: refused (125), then served with
    // `--device /dev/net/tun` (a name the allow-list refuses answers NXDOMAIN from the gateway's DNS).
    let allow =
        ["/airlock", "run", "--allow", "allowed.test", "--", "sh", "-c", "getent hosts refused.test; echo rc=$?"];
    let o = daemon.run(&fixed, &allow);
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("/dev/net/tun"), "{}", stderr(&o));
    let with_tun = [&fixed[..], &["--device", "/dev/net/tun"]].concat();
    let o = daemon.run(&with_tun, &allow);
    assert_eq!(code(&o), 0, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("rc=2"), "the gateway's DNS refuses the name: {}", stdout(&o));
}
