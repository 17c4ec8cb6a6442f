//! Shared helpers for the integration tests: they drive the real `airlock` binary, as root and as an ordinary
//! user the tests create, and skip honestly.
//!
//! A test that cannot run prints `SKIP: reason` and returns — except under `CI=true` when the machine is known
//! to have the capability (CI runs as root on a machine with user namespaces, Landlock and seccomp), where a
//! skip is a failure: `require!` panics there instead.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The name of the ordinary user the rootless tests run as.
pub const TEST_USER: &str = "airlock-test";

/// Whether we run under CI (`CI=true`), where skipping a capability the machine has is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the current test with a reason, or fails it under CI.
#[macro_export]
macro_rules! skip_or_fail {
    ($($reason:tt)*) => {{
        let reason = format!($($reason)*);
        if $crate::common::in_ci() {
            panic!("this CI machine should support this test, but: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }};
}

/// The airlock binary cargo built for these tests.
pub fn airlock_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

/// Whether the tests run as host root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The state directory the tests' airlock processes use (never the machine's /var/lib/airlock), per uid.
pub fn test_state_dir(uid: u32) -> String {
    format!("{}/airlock-test-state-{uid}", std::env::temp_dir().display())
}

/// `airlock ARGS...` as the current user, with stdin closed.
pub fn airlock(args: &[&str]) -> Output {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    Command::new(airlock_path())
        .args(args)
        .env("AIRLOCK_STATE_DIR", test_state_dir(uid))
        .stdin(Stdio::null())
        .output()
        .expect("spawn airlock")
}

/// Stops and removes a created sandbox when the test ends, passed or failed (a failed assertion must not leave
/// a sandbox running). Both are no-ops if the test already did it.
///
/// `airlock` runs airlock the way the test does (as the test user, with its own state directory, ...): a
/// function such as [`airlock`] or a closure borrowing what it needs, which then outlives the guard.
pub struct StopOnDrop<'a> {
    name: String,
    airlock: Box<Airlock<'a>>,
}

/// A way of running `airlock ARGS...`.
pub type Airlock<'a> = dyn Fn(&[&str]) -> Output + 'a;

impl<'a> StopOnDrop<'a> {
    pub fn new(name: &str, airlock: impl Fn(&[&str]) -> Output + 'a) -> StopOnDrop<'a> {
        StopOnDrop { name: name.to_owned(), airlock: Box::new(airlock) }
    }
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = (self.airlock)(&["stop", &self.name]);
        let _ = (self.airlock)(&["rm", &self.name]);
    }
}

/// `airlock run ARGS...`.
pub fn run(args: &[&str]) -> Output {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    airlock(&full)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Asserts a zero exit and returns stdout; prints both streams on failure.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert_eq!(code(o), 0, "expected success\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
    stdout(o)
}

/// Runs `sh -c SCRIPT` in a default sandbox and returns the output.
pub fn sh(script: &str) -> Output {
    run(&["--", "/bin/sh", "-c", script])
}

/// Whether this machine can run a sandbox at all (user namespaces etc.).
pub fn sandbox_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| code(&run(&["--", "/bin/true"])) == 0)
}

/// Skips (or fails under CI) when sandboxes cannot start here.
#[macro_export]
macro_rules! require_sandbox {
    () => {
        if !$crate::common::sandbox_works() {
            let o = $crate::common::run(&["--", "/bin/true"]);
            $crate::skip_or_fail!("airlock run does not work here: {}", $crate::common::stderr(&o).trim());
        }
    };
}

/// The airlock binary as any user can execute it: the build's own when every directory above it lets others
/// in, else a copy (with its sibling executables) in one fixed directory under /tmp (replaced atomically, so parallel test binaries agree and
/// no copy per run is left behind).
pub fn shared_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let built = airlock_path();
        let others_can_reach = built
            .ancestors()
            .skip(1)
            .all(|dir| std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false));
        if others_can_reach {
            return built;
        }
        let dir = std::env::temp_dir().join("airlock-test-bin");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // airlock's sibling executables too: airlock finds them next to itself (airlock-netgw for --net allow).
        for built in [built.clone(), built.with_file_name("airlock-netgw"), built.with_file_name("airlock-server")] {
            let name = built.file_name().unwrap().to_string_lossy().into_owned();
            let staged = dir.join(format!(".{name}-{}", std::process::id()));
            std::fs::copy(&built, &staged).unwrap();
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&staged, dir.join(name)).unwrap();
        }
        dir.join("airlock")
    })
    .clone()
}

/// Creates the ordinary test user if needed (as root). `None` when not root or `useradd` is missing.
pub fn test_user() -> Option<&'static str> {
    static READY: OnceLock<bool> = OnceLock::new();
    let ready = *READY.get_or_init(|| {
        if !is_root() {
            return false;
        }
        let exists = Command::new("id").arg("-u").arg(TEST_USER).output().is_ok_and(|o| o.status.success());
        if exists {
            return true;
        }
        let created = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", TEST_USER])
            .status()
            .is_ok_and(|s| s.success());
        // Another test binary may have created it at the same moment.
        created || Command::new("id").arg("-u").arg(TEST_USER).output().is_ok_and(|o| o.status.success())
    });
    ready.then_some(TEST_USER)
}

/// The test user's uid.
pub fn test_user_uid() -> u32 {
    let o = Command::new("id").arg("-u").arg(TEST_USER).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `airlock ARGS...` as the ordinary test user (rootless mode), via `setpriv`, with a clean environment.
pub fn airlock_as_user(args: &[&str]) -> Output {
    let uid = test_user_uid().to_string();
    let state = format!("AIRLOCK_STATE_DIR={}", test_state_dir(test_user_uid()));
    Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--reset-env", "--", "/usr/bin/env", &state])
        .arg(shared_binary())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv")
}

/// `airlock ARGS...` as the ordinary test user with its login group (which `newgidmap` insists on), the state
/// directory `state` and the extra `KEY=VALUE` variables `env`, with a clean environment.
pub fn airlock_as_user_in(state: &Path, env: &[String], args: &[&str]) -> Output {
    let uid = test_user_uid().to_string();
    let gid = Command::new("id").args(["-g", TEST_USER]).output().expect("id -g");
    let gid = String::from_utf8_lossy(&gid.stdout).trim().to_owned();
    Command::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--clear-groups", "--reset-env", "--", "/usr/bin/env"])
        .arg(format!("AIRLOCK_STATE_DIR={}", state.display()))
        .args(env)
        .arg(shared_binary())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv")
}

/// Gives the test user `user` the subordinate ids 300000-365535 (`/etc/subuid`, `/etc/subgid`) unless it has a
/// range already (`useradd --system` gives none); rootless sandboxes then map them through `newuidmap`.
#[allow(dead_code)]
pub fn ensure_subordinate_ids(user: &str) {
    let subuids = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuids.lines().any(|l| l.starts_with(&format!("{user}:"))) {
        let status = Command::new("usermod")
            .args(["--add-subuids", "300000-365535", "--add-subgids", "300000-365535", user])
            .status()
            .expect("spawn usermod");
        assert!(status.success(), "usermod --add-subuids failed");
    }
}

/// `airlock run ARGS...` as the ordinary test user.
pub fn run_as_user(args: &[&str]) -> Output {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    airlock_as_user(&full)
}

/// Skips (or fails under CI) unless running as root with the test user available; returns the user name.
#[macro_export]
macro_rules! require_test_user {
    () => {
        match $crate::common::test_user() {
            Some(user) => user,
            None => {
                if !$crate::common::is_root() {
                    eprintln!("SKIP: rootless tests need root to create the test user");
                    return;
                }
                $crate::skip_or_fail!("cannot create the test user {}", $crate::common::TEST_USER);
            }
        }
    };
}

/// A temporary directory removed on drop, world-traversable so the test user can reach it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("airlock-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn str(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Hands the directory (recursively) to the test user.
    pub fn chown_to_test_user(&self) {
        let uid = test_user_uid().to_string();
        let status = Command::new("chown").arg("-R").arg(format!("{uid}:{uid}")).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs argv[3:] on a new pseudo-terminal of argv[1] rows and argv[2] columns (set on the terminal before the
/// program starts), prints everything it wrote (see the options below), then `EXIT <status>`. Kills it after 20 s.
pub const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time
rows, cols, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
# Optional: "--resize R C" — once the command prints READY, resize the terminal and send airlock SIGWINCH,
# as a terminal emulator does.
resize = None
if argv[:1] == ["--resize"]:
    resize, argv = (int(argv[1]), int(argv[2])), argv[3:]
# Optional: "--type TEXT" — once airlock has put the terminal in raw mode (it relays the sandbox's terminal),
# type TEXT ("^D" in it is the end-of-file character).
typed = None
if argv[:1] == ["--type"]:
    typed, argv = argv[1].replace("^D", "\x04").encode(), argv[2:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.execvp(argv[0], argv)
out = b""
deadline = time.time() + 20
while time.time() < deadline:
    if resize and b"READY" in out:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", resize[0], resize[1], 0, 0))
        os.kill(pid, signal.SIGWINCH)
        resize = None
    if typed and not termios.tcgetattr(fd)[3] & termios.ECHO:
        os.write(fd, typed)
        typed = None
    ready, _, _ = select.select([fd], [], [], 0.1)
    if not ready:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
else:
    os.kill(pid, signal.SIGKILL)
    out += b"\nDRIVER: timed out\n"
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("EXIT", os.waitstatus_to_exitcode(status))
"#;

pub fn python3() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"].into_iter().find(|p| Path::new(p).exists())
}

/// Whether `tool` is on `PATH` (`command -v`).
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A root directory `dir/rootfs` of busybox (static) and the applets the OCI runtime tests run, with the few
/// files a container's tools read (`/etc/passwd`, `/etc/group`, `/etc/hosts`, an empty `/etc/resolv.conf`).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "cat", "sleep", "ls", "id", "hostname", "wget", "env", "true", "false", "tty", "test", "head",
        "ps",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    root
}
