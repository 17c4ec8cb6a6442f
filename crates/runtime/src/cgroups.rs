//! One cgroup per sandbox: memory, process and CPU limits that hold, the numbers `airlock stats` shows, and a
//! teardown that leaves nothing behind.
//!
//! Two layouts give the same behaviour:
//! - **cgroup v2** (most hosts): one directory, `<base>/airlock/<name>`. `<base>` is the topmost cgroup on the way
//!   from the hierarchy's root down to this process's own cgroup (from `/proc/self/cgroup`) whose `cgroup.procs`
//!   we may write: the hierarchy's root for root, the systemd user manager's delegated `user@UID.service` for a
//!   user. Moving a process needs write access to `cgroup.procs` of the common ancestor of its old and new
//!   cgroup; the sandbox starts in our cgroup, and `<base>` is an ancestor of both.
//! - **cgroup v1 / hybrid** (this machine): one directory `<base>/airlock/<name>` in each of the memory, pids, cpu
//!   and cpuacct hierarchies, `<base>` found the same way (the hierarchy's root as root; v1 has no delegation).
//!
//! ## Names and stale cgroups
//! A cgroup's name records who owns it: `<pid-ns>-<pid>-<start>-<sandbox>`, with the inode of the owner's pid
//! namespace, its pid, its start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) and the sandbox
//! name given by the caller. The owner is the process that called [`SandboxCgroup::create`]; it must live as long
//! as the sandbox (the supervisor). pid and start time together name one process for the whole uptime, so
//! [`remove_stale_cgroups`] can tell that an owner died (killed with `SIGKILL`, say) even if its pid was reused;
//! owners in another pid namespace are never judged dead.
//!
//! ## Killing without hitting strangers
//! `cgroup.kill` (v2, 5.14+) kills a cgroup atomically. Elsewhere members are read from `cgroup.procs` and killed
//! one by one: each pid is opened as a pidfd, and only pids still listed after that are signalled through the
//! pidfd, so a pid that a member freed and a host process reused is never signalled.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use policy::sandbox::Limits;

use sys::Errno;

/// Where cgroupfs is normally mounted.
pub const SYS_FS_CGROUP: &str = "/sys/fs/cgroup";

/// The directory, under each base cgroup, that holds every sandbox's cgroup.
const AIRLOCK_DIR: &str = "airlock";

/// Leaf cgroup this process moves itself into when it is alone in a delegated v2 cgroup that must enable
/// controllers (cgroup v2 lets only a cgroup without processes of its own do that).
const SUPERVISOR_LEAF: &str = "airlock-supervisor";

/// CFS period for `--cpus`: 100 ms, the kernel's default.
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// The kernel refuses CFS quotas below 1 ms.
const MIN_CPU_QUOTA_USEC: u64 = 1_000;

/// How long teardown keeps killing and retrying `rmdir` (busy while killed tasks exit) before giving up.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between teardown rounds.
const TEARDOWN_PAUSE: Duration = Duration::from_millis(5);

/// v1 reports "no limit" as the largest page-aligned `i64` (9223372036854771712 with 4K pages); nothing at or
/// above 2^62 bytes is a real limit.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Longest sandbox part of a cgroup name.
const MAX_SANDBOX_PART: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem is mounted at the given root.
    #[error("no cgroup filesystem is mounted at {path} (neither cgroup2 nor a v1 memory, pids or cpu hierarchy)")]
    NotMounted { path: PathBuf },
    /// A requested limit cannot be enforced on this host; the run must fail closed unless the profile makes
    /// limits optional.
    #[error("cannot enforce {controller} limits: {reason} (to fix: {fix})")]
    ControllerUnavailable { controller: &'static str, reason: String, fix: String },
    /// A limit value the kernel cannot take.
    #[error("invalid {what} limit {value}: {reason}")]
    InvalidLimit { what: &'static str, value: String, reason: &'static str },
    /// The sandbox part of a cgroup name is not a plain name.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Cannot read a cgroup or proc file.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A cgroup or proc file holds something unexpected.
    #[error("cannot parse {path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    /// Cannot write a cgroup file.
    #[error("cannot write {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    /// Cannot create a cgroup directory.
    #[error("cannot create cgroup {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot move a process into the cgroup.
    #[error("cannot move process {pid} into cgroup {path}")]
    AddProcess {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot signal a member of the cgroup.
    #[error("cannot kill process {pid} of cgroup {path}")]
    KillProcess {
        pid: i32,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Processes survived repeated `SIGKILL`.
    #[error("cgroup {path} still has processes after {seconds}s of SIGKILL")]
    KillTimedOut { path: PathBuf, seconds: u64 },
    /// Cannot remove a cgroup directory.
    #[error("cannot remove cgroup {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How the cgroup hierarchies that carry airlock's controllers are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// The unified hierarchy, mounted at `root` (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host
    /// whose v1 hierarchies carry none of memory, pids and cpu).
    V2 { root: PathBuf },
    /// One v1 hierarchy per controller (`None`: not mounted). `cpu` and `cpuacct` are the same path when
    /// co-mounted.
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf>, cpuacct: Option<PathBuf> },
}

/// Finds how cgroupfs is laid out under `sys_fs_cgroup` (normally [`SYS_FS_CGROUP`]; tests pass a temporary
/// directory laid out like it). A hybrid host whose v1 hierarchies carry memory, pids or cpu is `V1`: those
/// controllers cannot be on the unified hierarchy at the same time.
pub fn detect_layout(sys_fs_cgroup: &Path) -> Result<CgroupLayout, CgroupError> {
    if sys_fs_cgroup.join("cgroup.controllers").is_file() {
        return Ok(CgroupLayout::V2 { root: sys_fs_cgroup.to_path_buf() });
    }
    let memory = find_v1_hierarchy(sys_fs_cgroup, "memory");
    let pids = find_v1_hierarchy(sys_fs_cgroup, "pids");
    let cpu = find_v1_hierarchy(sys_fs_cgroup, "cpu");
    let cpuacct = find_v1_hierarchy(sys_fs_cgroup, "cpuacct");
    if memory.is_some() || pids.is_some() || cpu.is_some() {
        return Ok(CgroupLayout::V1 { memory, pids, cpu, cpuacct });
    }
    let unified = sys_fs_cgroup.join("unified");
    if unified.join("cgroup.controllers").is_file() {
        return Ok(CgroupLayout::V2 { root: unified });
    }
    Err(CgroupError::NotMounted { path: sys_fs_cgroup.to_path_buf() })
}

/// The v1 hierarchy carrying `controller`: `root/<controller>`, or a co-mounted `root/cpu,cpuacct`; resolved,
/// so that co-mounted controllers compare equal.
pub fn find_v1_hierarchy(root: &Path, controller: &str) -> Option<PathBuf> {
    let is_hierarchy = |p: &Path| p.join("tasks").is_file();
    let direct = root.join(controller);
    let found = if is_hierarchy(&direct) {
        Some(direct)
    } else {
        fs::read_dir(root).ok()?.flatten().map(|e| e.path()).find(|path| {
            let listed =
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.split(',').any(|c| c == controller));
            listed && is_hierarchy(path)
        })
    };
    // Only a symbolic link needs resolving (`cpu` -> `cpu,cpuacct` where they are co-mounted): a hierarchy's own
    // mount point is what every controller on it is found at. `canonicalize` would `readlink` each component
    // of the path, four system calls per controller on every sandbox start with limits.
    found.map(|p| match fs::symlink_metadata(&p) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(&p).unwrap_or(p),
        _ => p,
    })
}

/// The process that owns a sandbox cgroup, as recorded in the cgroup's name (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupOwner {
    /// Inode of the owner's pid namespace (`/proc/<pid>/ns/pid`).
    pub pid_namespace: u64,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
    pub start_time: u64,
}

impl CgroupOwner {
    /// This process.
    pub fn current() -> Result<CgroupOwner, CgroupError> {
        let ns = Path::new("/proc/self/ns/pid");
        let pid_namespace = fs::metadata(ns).map_err(|source| read_error(ns, source))?.ino();
        let pid = std::process::id();
        let start_time = process_start_time(pid)?
            .ok_or_else(|| read_error(Path::new("/proc/self/stat"), io::ErrorKind::NotFound.into()))?;
        Ok(CgroupOwner { pid_namespace, pid, start_time })
    }

    /// `<pid-ns>-<pid>-<start>`: the owner as its names carry it (cgroups here, the VM backend's staging
    /// directories), read back by [`CgroupOwner::from_cgroup_name`].
    pub fn tag(&self) -> String {
        format!("{}-{}-{}", self.pid_namespace, self.pid, self.start_time)
    }

    /// The cgroup name `<pid-ns>-<pid>-<start>-<sandbox>`.
    fn cgroup_name(&self, sandbox: &str) -> Result<String, CgroupError> {
        validate_sandbox_part(sandbox)?;
        Ok(format!("{}-{sandbox}", self.tag()))
    }

    /// Reads the owner back from a cgroup name; `None` for a name airlock did not make.
    pub fn from_cgroup_name(name: &str) -> Option<(CgroupOwner, &str)> {
        let mut parts = name.splitn(4, '-');
        let pid_namespace = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        let sandbox = parts.next()?;
        validate_sandbox_part(sandbox).ok()?;
        Some((CgroupOwner { pid_namespace, pid, start_time }, sandbox))
    }

    /// Whether the owner may still be running. Only an owner in our own pid namespace whose pid is gone or now
    /// belongs to a process with another start time is known to be dead; anything uncertain counts as alive.
    pub fn may_be_alive(&self, our_pid_namespace: u64) -> bool {
        if self.pid_namespace != our_pid_namespace {
            return true;
        }
        match process_start_time(self.pid) {
            Ok(Some(start)) => start == self.start_time,
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`; `None` when there is no such process.
fn process_start_time(pid: u32) -> Result<Option<u64>, CgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = match crate::host::read_small(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(&path, source)),
    };
    // The command name (field 2) is in parentheses and may contain spaces and ')': fields resume after the last
    // ')'. Field 3 is the first after it, so field 22 is the 20th.
    let start = text.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok());
    match start {
        Some(start) => Ok(Some(start)),
        None => Err(CgroupError::Parse { path, content: text }),
    }
}

/// The sandbox part of a cgroup name: a plain name (as `--name` allows) that cannot contain `/` or start with
/// `.` or `-`.
fn validate_sandbox_part(name: &str) -> Result<(), CgroupError> {
    let fail = |reason| Err(CgroupError::InvalidName { name: name.to_string(), reason });
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_SANDBOX_PART {
        return fail("it is longer than 128 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return fail("use letters, digits, '_', '.' and '-' only");
    }
    if !name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return fail("it must start with a letter or digit");
    }
    Ok(())
}

/// Where one sandbox's cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dirs {
    V2 { dir: PathBuf },
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf>, cpuacct: Option<PathBuf> },
}

/// Every directory in `dirs`, once each (co-mounted v1 hierarchies share one).
fn dirs_paths(dirs: &Dirs) -> Vec<&Path> {
    let mut paths: Vec<&Path> = match dirs {
        Dirs::V2 { dir } => vec![dir],
        Dirs::V1 { memory, pids, cpu, cpuacct } => {
            [memory, pids, cpu, cpuacct].into_iter().filter_map(|d| d.as_deref()).collect()
        }
    };
    paths.dedup();
    paths
}

/// See [`SandboxCgroup::entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupEntryPoint {
    /// cgroup v2: open this directory and pass it to `clone3(CLONE_INTO_CGROUP)`.
    CloneInto(PathBuf),
    /// cgroup v1: the new process writes `0` to each of these `tasks` files itself.
    SelfAttach(Vec<PathBuf>),
}

/// One sandbox's cgroup. Dropping it without [`SandboxCgroup::remove`] kills its processes and removes it too
/// (best effort, errors ignored), but only in the process that created it: a forked child that drops its copy
/// leaves it alone.
#[derive(Debug)]
pub struct SandboxCgroup {
    name: String,
    dirs: Dirs,
    /// The creating process; `None` for a handle from [`SandboxCgroup::open`], which never tears down on drop.
    teardown_on_drop_in: Option<u32>,
    /// The `airlock/` directories of the usable v1 hierarchies this cgroup has no directory in
    /// ([`Accounting::LimitsOnly`]): another sandbox's cgroup may be there, and
    /// [`remove_stale_cgroups_beside`] sweeps them too.
    other_parents: Vec<PathBuf>,
}

/// Resource use of a sandbox, from its cgroup files. `None`: the controller is not attached, or this kernel does
/// not report the value (`memory.peak` needs 5.19, `pids.peak` 6.1 on v2; v1 `oom_kill` needs 4.13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Bytes charged now: `memory.current` (v2) / `memory.usage_in_bytes` (v1).
    pub memory_current: Option<u64>,
    /// Highest charge seen: `memory.peak` (v2) / `memory.max_usage_in_bytes` (v1).
    pub memory_peak: Option<u64>,
    /// `memory.max` / `memory.limit_in_bytes`; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// Processes the OOM killer killed in this cgroup: `oom_kill` of `memory.events` (v2) /
    /// `memory.oom_control` (v1).
    pub oom_kills: Option<u64>,
    /// `pids.current`.
    pub pids_current: Option<u64>,
    /// `pids.peak`.
    pub pids_peak: Option<u64>,
    /// `pids.max`; `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Forks refused because of `pids.max`: `max` of `pids.events`.
    pub pids_max_hits: Option<u64>,
    /// CPU time used, µs: `usage_usec` of `cpu.stat` (v2) / `cpuacct.usage` (v1, in ns).
    pub cpu_usage_usec: Option<u64>,
}

impl CgroupStats {
    /// Whether the OOM killer killed a process of the sandbox. The cgroup is new for each sandbox, so any kill
    /// counted is the sandbox's; a `SIGKILL`ed command with this true was killed for memory.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills.unwrap_or(0) > 0
    }

    /// `limit 64M, peak 63.9M` for the out-of-memory message; parts the kernel does not report are left out.
    pub fn memory_summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(limit) = self.memory_limit {
            parts.push(format!("limit {}", format_bytes(limit)));
        }
        if let Some(peak) = self.memory_peak {
            parts.push(format!("peak {}", format_bytes(peak)));
        }
        parts.join(", ")
    }
}

/// Bytes in the units `--memory` takes: `64M`, `63.9M`, `1.5G`, `512K`, `100B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (suffix, size) in UNITS {
        if bytes >= size {
            // Rounded to a tenth of the unit.
            let tenths = (bytes as u128 * 10 + size as u128 / 2) / size as u128;
            let (whole, tenth) = (tenths / 10, tenths % 10);
            return if tenth == 0 { format!("{whole}{suffix}") } else { format!("{whole}.{tenth}{suffix}") };
        }
    }
    format!("{bytes}B")
}

/// What a sandbox's cgroup is made for besides its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accounting {
    /// The sandbox's resource numbers have a reader (`airlock stats`, the audit log's `exited` record, a kept
    /// sandbox's final numbers): every controller the host offers is attached, limited or not (cgroup v1: a
    /// directory in each of the memory, pids, cpu and cpuacct hierarchies), and [`SandboxCgroup::stats`] reads
    /// them all.
    #[default]
    Full,
    /// Nothing reads the numbers (an anonymous run without an audit log): cgroup v1 gets a directory only in the
    /// hierarchies of the limits asked for; each further one would cost a `mkdir`, a join and an `rmdir` in the
    /// kernel for numbers nobody sees. The run reads only what its outcome needs ([`SandboxCgroup::verdicts`]).
    /// cgroup v2 is one directory either way.
    LimitsOnly,
}

/// What `create` needs from the host besides the layout; a parameter so that tests can stand in for it.
struct HostView<'a> {
    /// `/proc/self/cgroup`, parsed.
    own: &'a [CgroupEntry],
    owner: CgroupOwner,
    /// Effective uid, for messages.
    euid: u32,
}

impl SandboxCgroup {
    /// Creates `airlock/<name>` under the base cgroup (see the module documentation) and writes `limits`; the
    /// name is `<pid-ns>-<pid>-<start>-<sandbox>` with this process as owner. Controllers that no limit needs
    /// are attached when available (for `stats`) and skipped otherwise; a limit that cannot be enforced is
    /// [`CgroupError::ControllerUnavailable`]. `limits.disk_bytes` is not a cgroup matter and is ignored. On error
    /// nothing created is left behind.
    pub fn create(layout: &CgroupLayout, sandbox: &str, limits: &Limits) -> Result<SandboxCgroup, CgroupError> {
        match SandboxCgroup::plan(layout, sandbox, limits, Accounting::Full)? {
            CgroupPlan::Made(cgroup) => Ok(cgroup),
            CgroupPlan::Deferred(planned) => planned.make(),
        }
    }

    /// [`SandboxCgroup::create`] in two steps, so that the slow part can run while the sandbox's init sets itself
    /// up: every check that can refuse a limit (which hierarchies are writable, the name, the CPU quota) is done
    /// now, and nothing is created yet. On cgroup v1 the directories are made and the limits written later, by
    /// [`PlannedCgroup::make`]: init joins by itself (see [`SandboxCgroup::entry`]) and only needs the paths,
    /// which the plan already knows. On cgroup v2 init is born inside (`CLONE_INTO_CGROUP`), so the cgroup must
    /// exist before `clone`: it is made now. `accounting` says which controllers beyond the limits' are attached.
    pub fn plan(
        layout: &CgroupLayout,
        sandbox: &str,
        limits: &Limits,
        accounting: Accounting,
    ) -> Result<CgroupPlan, CgroupError> {
        let own = read_own_cgroups()?;
        let euid = sys::process::effective_uid();
        let host = HostView { own: &own, owner: CgroupOwner::current()?, euid };
        plan_with(layout, &host, sandbox, limits, accounting)
    }

    /// A handle on an existing sandbox cgroup by its full name (from [`SandboxCgroup::name`]), for `stats` or
    /// `kill_all` from another process; `None` if it does not exist. Dropping it never tears down.
    pub fn open(layout: &CgroupLayout, name: &str) -> Result<Option<SandboxCgroup>, CgroupError> {
        if CgroupOwner::from_cgroup_name(name).is_none() {
            return Err(CgroupError::InvalidName { name: name.to_string(), reason: "not a name airlock made" });
        }
        let own = read_own_cgroups()?;
        let find = |hierarchy: &Option<PathBuf>, controller: &str| {
            let base = delegation_root(hierarchy.as_deref()?, own_path(&own, Some(controller)))?;
            Some(base.join(AIRLOCK_DIR).join(name)).filter(|d| d.is_dir())
        };
        let dirs = match layout {
            CgroupLayout::V2 { root } => delegation_root(root, own_path(&own, None))
                .map(|base| base.join(AIRLOCK_DIR).join(name))
                .filter(|dir| dir.is_dir())
                .map(|dir| Dirs::V2 { dir }),
            CgroupLayout::V1 { memory, pids, cpu, cpuacct } => {
                let (memory, pids, cpu, cpuacct) =
                    (find(memory, "memory"), find(pids, "pids"), find(cpu, "cpu"), find(cpuacct, "cpuacct"));
                let any = memory.is_some() || pids.is_some() || cpu.is_some() || cpuacct.is_some();
                any.then_some(Dirs::V1 { memory, pids, cpu, cpuacct })
            }
        };
        Ok(dirs.map(|dirs| SandboxCgroup {
            name: name.to_string(),
            dirs,
            teardown_on_drop_in: None,
            other_parents: Vec::new(),
        }))
    }

    /// The cgroup's name, `<pid-ns>-<pid>-<start>-<sandbox>`; the same in every hierarchy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The main directory, for messages: the v2 cgroup, or the v1 memory (else pids, cpu) one.
    pub fn path(&self) -> &Path {
        match &self.dirs {
            Dirs::V2 { dir } => dir,
            Dirs::V1 { memory, pids, cpu, cpuacct } => {
                memory.as_deref().or(pids.as_deref()).or(cpu.as_deref()).or(cpuacct.as_deref()).unwrap_or(Path::new(""))
            }
        }
    }

    /// Every directory of this cgroup, once each (co-mounted v1 hierarchies share one).
    pub fn paths(&self) -> Vec<&Path> {
        dirs_paths(&self.dirs)
    }

    /// How the sandbox's first process gets into the cgroup without the cost of migrating it. Moving another
    /// process (`cgroup.procs`) takes the kernel's global threadgroup lock for writing, which waits for an RCU
    /// grace period — about 10 ms on an idle machine, several times airlock's whole startup. Two ways avoid it:
    /// on cgroup v2 the process is created inside (`clone3` with `CLONE_INTO_CGROUP`); on v1 it moves itself,
    /// one thread writing `0` to each hierarchy's `tasks` file, which the kernel does without that lock.
    pub fn entry(&self) -> CgroupEntryPoint {
        match &self.dirs {
            Dirs::V2 { dir } => CgroupEntryPoint::CloneInto(dir.clone()),
            Dirs::V1 { .. } => CgroupEntryPoint::SelfAttach(self.paths().iter().map(|d| d.join("tasks")).collect()),
        }
    }

    /// Moves process `pid` (and all its threads) into the cgroup, in every hierarchy. Call it before the process
    /// runs anything of the sandbox's: its children are born inside.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            let procs = dir.join("cgroup.procs");
            write_value(&procs, &pid.to_string()).map_err(|source| CgroupError::AddProcess {
                pid,
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// Reads the sandbox's resource use.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        self.read_stats(Reading::All)
    }

    /// What a run's outcome needs of [`SandboxCgroup::stats`]: the OOM kills and the forks the process limit
    /// refused (two files where `stats` reads nine); the memory limit and peak only after an OOM kill (for its
    /// message), `pids.max` only after a refused fork. Every other field is `None`.
    pub fn verdicts(&self) -> Result<CgroupStats, CgroupError> {
        self.read_stats(Reading::Verdicts)
    }

    fn read_stats(&self, reading: Reading) -> Result<CgroupStats, CgroupError> {
        match &self.dirs {
            Dirs::V2 { dir } => stats_v2(dir, reading),
            Dirs::V1 { memory, pids, cpu: _, cpuacct } => {
                stats_v1(memory.as_deref(), pids.as_deref(), cpuacct.as_deref(), reading)
            }
        }
    }

    /// Kills every process in the cgroup (and in any cgroup the sandbox made below it) and waits until none is
    /// left. v2: `cgroup.kill` when the kernel has it (5.14+), else freeze, `SIGKILL` each member, thaw. v1:
    /// `SIGKILL` each member of each hierarchy, repeatedly, until all are empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_dirs(&self.paths(), matches!(self.dirs, Dirs::V2 { .. }))
    }

    /// Kills everything in the cgroup and removes its directories. `rmdir` fails with `EBUSY` while killed
    /// tasks finish exiting, so it is retried for a few seconds.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.teardown_on_drop_in = None;
        teardown(&self.paths(), matches!(self.dirs, Dirs::V2 { .. }))
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if self.teardown_on_drop_in == Some(std::process::id()) {
            let _ = teardown(&self.paths(), matches!(self.dirs, Dirs::V2 { .. }));
        }
    }
}

/// One line of `/proc/self/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// 0 for the v2 hierarchy.
    pub hierarchy: u32,
    /// Empty for v2; `name=systemd` style entries are kept as they are.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parse `/proc/self/cgroup`. Malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let hierarchy = fields.next()?.trim().parse().ok()?;
            let controllers = fields.next()?.split(',').filter(|c| !c.is_empty()).map(str::to_string).collect();
            // The path is the rest of the line: it may itself contain ':'.
            let path = fields.next()?.to_string();
            if !path.starts_with('/') {
                return None;
            }
            Some(CgroupEntry { hierarchy, controllers, path })
        })
        .collect()
}

fn read_own_cgroups() -> Result<Vec<CgroupEntry>, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    let text = crate::host::read_small(path).map_err(|source| read_error(path, source))?;
    Ok(parse_proc_cgroup(&text))
}

/// This process's cgroup path in the v2 hierarchy (`controller` `None`) or in the v1 hierarchy of `controller`;
/// `/` when `/proc/self/cgroup` has no such line.
fn own_path<'a>(own: &'a [CgroupEntry], controller: Option<&str>) -> &'a str {
    own.iter()
        .find(|e| match controller {
            None => e.hierarchy == 0 && e.controllers.is_empty(),
            Some(c) => e.hierarchy != 0 && e.controllers.iter().any(|x| x == c),
        })
        .map_or("/", |e| e.path.as_str())
}

/// The topmost cgroup from `hierarchy` down to `own` (a path from `/proc/self/cgroup`) whose directory and
/// `cgroup.procs` this process may write. `None` when there is none (not root, not delegated), or when `own`
/// climbs out with `..` (a cgroup outside our cgroup namespace).
fn delegation_root(hierarchy: &Path, own: &str) -> Option<PathBuf> {
    let mut dir = hierarchy.to_path_buf();
    let mut components = Path::new(own).components().filter(|c| !matches!(c, Component::RootDir));
    loop {
        if is_writable(&dir) && is_writable(&dir.join("cgroup.procs")) {
            return Some(dir);
        }
        match components.next() {
            Some(Component::Normal(name)) => dir.push(name),
            _ => return None,
        }
        if !dir.is_dir() {
            return None;
        }
    }
}

/// What [`SandboxCgroup::plan`] decided.
#[derive(Debug)]
pub enum CgroupPlan {
    /// cgroup v2: made already.
    Made(SandboxCgroup),
    /// cgroup v1: to be made with [`PlannedCgroup::make`].
    Deferred(PlannedCgroup),
}

/// A cgroup v1 sandbox cgroup whose every check passed, not created yet (see [`SandboxCgroup::plan`]).
#[derive(Debug)]
pub struct PlannedCgroup {
    name: String,
    /// Where each hierarchy's directory will be.
    dirs: Dirs,
    memory_bytes: Option<u64>,
    pids: Option<u64>,
    cpu_quota: Option<u64>,
    owner_pid: u32,
    /// See [`SandboxCgroup`]'s field of the same name.
    other_parents: Vec<PathBuf>,
}

impl PlannedCgroup {
    /// The `tasks` files the sandbox's init will write `0` to once [`PlannedCgroup::make`] has made them.
    pub fn tasks(&self) -> Vec<PathBuf> {
        dirs_paths(&self.dirs).iter().map(|d| d.join("tasks")).collect()
    }

    /// The cgroup's name, as [`SandboxCgroup::name`] will be.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the directories and writes the limits. On error nothing created is left behind.
    pub fn make(self) -> Result<SandboxCgroup, CgroupError> {
        let (cgroup, limits) = self.make_dirs()?;
        limits.write(&cgroup)?;
        Ok(cgroup)
    }

    /// [`PlannedCgroup::make`]'s first half: the directories, which is all a process needs to join. The limits
    /// still have to be written ([`PendingLimits::write`]) before anything of the sandbox's runs. On error
    /// nothing created is left behind.
    pub fn make_dirs(self) -> Result<(SandboxCgroup, PendingLimits), CgroupError> {
        let PlannedCgroup { name, dirs, memory_bytes, pids, cpu_quota, owner_pid, other_parents } = self;
        let Dirs::V1 { memory, pids: pids_dir, cpu, cpuacct } = dirs else {
            return Err(CgroupError::InvalidName { name, reason: "only a cgroup v1 plan is made later" });
        };
        let cgroup = make_v1_dirs([memory, pids_dir, cpu, cpuacct], name, owner_pid, other_parents)?;
        Ok((cgroup, PendingLimits { memory_bytes, pids, cpu_quota }))
    }
}

/// The limits of a cgroup v1 cgroup whose directories [`PlannedCgroup::make_dirs`] made.
#[derive(Debug)]
#[must_use = "the limits are not in force until written"]
pub struct PendingLimits {
    memory_bytes: Option<u64>,
    pids: Option<u64>,
    cpu_quota: Option<u64>,
}

impl PendingLimits {
    /// Writes the limits into `cgroup`'s files.
    pub fn write(self, cgroup: &SandboxCgroup) -> Result<(), CgroupError> {
        let Dirs::V1 { memory, pids, cpu, .. } = &cgroup.dirs else { return Ok(()) };
        if let Some(dir) = memory {
            limit_memory_v1(dir, self.memory_bytes)?;
        }
        if let (Some(dir), Some(max)) = (pids, self.pids) {
            write_limit(&dir.join("pids.max"), &max.to_string())?;
        }
        if let (Some(dir), Some(quota)) = (cpu, self.cpu_quota) {
            write_limit(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_USEC.to_string())?;
            write_limit(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(())
    }
}

fn plan_with(
    layout: &CgroupLayout,
    host: &HostView<'_>,
    sandbox: &str,
    limits: &Limits,
    accounting: Accounting,
) -> Result<CgroupPlan, CgroupError> {
    let name = host.owner.cgroup_name(sandbox)?;
    let cpu_quota = limits.cpus.map(cpu_quota_usec).transpose()?;
    match layout {
        CgroupLayout::V2 { root } => create_v2(root, host, name, limits, cpu_quota).map(CgroupPlan::Made),
        CgroupLayout::V1 { memory, pids, cpu, cpuacct } => {
            plan_v1([memory, pids, cpu, cpuacct], host, name, limits, cpu_quota, accounting).map(CgroupPlan::Deferred)
        }
    }
}

#[cfg(test)]
fn create_with(
    layout: &CgroupLayout,
    host: &HostView<'_>,
    sandbox: &str,
    limits: &Limits,
) -> Result<SandboxCgroup, CgroupError> {
    match plan_with(layout, host, sandbox, limits, Accounting::Full)? {
        CgroupPlan::Made(cgroup) => Ok(cgroup),
        CgroupPlan::Deferred(planned) => planned.make(),
    }
}

/// `--cpus` as a CFS quota per [`CPU_PERIOD_USEC`].
fn cpu_quota_usec(cpus: f64) -> Result<u64, CgroupError> {
    if !cpus.is_finite() || cpus <= 0.0 {
        let value = cpus.to_string();
        return Err(CgroupError::InvalidLimit { what: "cpus", value, reason: "it must be a positive number" });
    }
    let quota = (cpus * CPU_PERIOD_USEC as f64).round();
    if quota >= u64::MAX as f64 {
        return Err(CgroupError::InvalidLimit { what: "cpus", value: cpus.to_string(), reason: "it is too large" });
    }
    Ok((quota as u64).max(MIN_CPU_QUOTA_USEC))
}

// ---------------------------------------------------------------------------------------------------------------
// cgroup v2.

/// The controllers airlock attaches on v2, and which limit needs each.
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

fn create_v2(
    root: &Path,
    host: &HostView<'_>,
    name: String,
    limits: &Limits,
    cpu_quota: Option<u64>,
) -> Result<SandboxCgroup, CgroupError> {
    let needed = |c: &str| match c {
        "memory" => limits.memory_bytes.is_some(),
        "pids" => limits.pids.is_some(),
        "cpu" => cpu_quota.is_some(),
        _ => false,
    };
    let first_needed = V2_CONTROLLERS.into_iter().find(|c| needed(c)).unwrap_or("cgroup");
    let own = own_path(host.own, None);
    let Some(base) = delegation_root(root, own) else {
        return Err(CgroupError::ControllerUnavailable {
            controller: first_needed,
            reason: format!(
                "no cgroup from {} down to this process's cgroup {own} is writable by uid {} (none is delegated)",
                root.display(),
                host.euid
            ),
            fix: FIX_V2_DELEGATE.to_string(),
        });
    };

    // The controllers the base may hand down; a needed one that is missing cannot be enforced.
    let available = read_words(&base.join("cgroup.controllers"))?;
    let mut attach = Vec::new();
    for controller in V2_CONTROLLERS {
        if available.iter().any(|a| a == controller) {
            attach.push(controller);
        } else if needed(controller) {
            return Err(CgroupError::ControllerUnavailable {
                controller,
                reason: format!(
                    "the {controller} controller is not delegated to {} (its cgroup.controllers: {})",
                    base.display(),
                    words_or_none(&available)
                ),
                fix: if host.euid == 0 { FIX_V2_ENABLE_AS_ROOT } else { FIX_V2_DELEGATE }.to_string(),
            });
        }
    }

    // Enable them for the base's children, then for airlock/'s. A cgroup with processes of its own cannot
    // (the "no internal processes" rule; the hierarchy's root is exempt).
    let is_own = base == root.join(own.trim_start_matches('/'));
    let attach = enable_controllers(&base, &attach, &needed, is_own, host.owner.pid)?;
    let parent = base.join(AIRLOCK_DIR);
    make_dir_if_missing(&parent)?;
    let attach = enable_controllers(&parent, &attach, &needed, false, host.owner.pid)?;

    let dir = parent.join(&name);
    if let Some(controller) = V2_CONTROLLERS.into_iter().find(|c| needed(c) && !attach.contains(c)) {
        return Err(missing_v2_controller(&dir, controller));
    }
    make_dir(&dir)?;
    // From here on, an error drops `cgroup`, which removes the directory.
    let cgroup = SandboxCgroup {
        name,
        dirs: Dirs::V2 { dir: dir.clone() },
        teardown_on_drop_in: Some(host.owner.pid),
        other_parents: Vec::new(),
    };
    // A limit's file that is not there (the write's open says so, no `statx` first): the controller did not
    // reach the new cgroup after all.
    let write = |controller: &'static str, value: &str| match write_limit(&dir.join(v2_limit_file(controller)), value) {
        Err(CgroupError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Err(missing_v2_controller(&dir, controller))
        }
        other => other,
    };
    if let Some(bytes) = limits.memory_bytes {
        write("memory", &bytes.to_string())?;
        // Swap would let the sandbox hold more than --memory. No file: the kernel has no swap accounting (no
        // CONFIG_SWAP, or swapaccount=0), so there is no swap to hold.
        write_if_present(&dir.join("memory.swap.max"), "0")?;
    }
    if let Some(pids) = limits.pids {
        write("pids", &pids.to_string())?;
    }
    if let Some(quota) = cpu_quota {
        write("cpu", &format!("{quota} {CPU_PERIOD_USEC}"))?;
    }
    Ok(cgroup)
}

/// The cgroup v2 file that holds the limit of `controller` (one of [`V2_CONTROLLERS`]).
fn v2_limit_file(controller: &str) -> &'static str {
    match controller {
        "memory" => "memory.max",
        "pids" => "pids.max",
        _ => "cpu.max",
    }
}

fn missing_v2_controller(dir: &Path, controller: &'static str) -> CgroupError {
    CgroupError::ControllerUnavailable {
        controller,
        reason: format!("{} has no {} after enabling the controller", dir.display(), v2_limit_file(controller)),
        fix: FIX_V2_ENABLE_AS_ROOT.to_string(),
    }
}

const FIX_V2_DELEGATE: &str = "run airlock as root, or in a delegated cgroup: \
     systemd-run --user --scope -p Delegate=yes airlock run ...; to delegate for good, create \
     /etc/systemd/system/user@.service.d/delegate.conf with \"[Service]\" and \"Delegate=memory pids cpu\", run \
     systemctl daemon-reload and log in again (airlock doctor shows what is delegated)";

const FIX_V2_ENABLE_AS_ROOT: &str = "enable the controller in the parents' cgroup.subtree_control \
     (echo +memory +pids +cpu > .../cgroup.subtree_control), or with systemd: Delegate=memory pids cpu";

/// Writes `+controller` into `dir/cgroup.subtree_control` for each of `attach` not yet enabled there, and
/// returns the ones that are enabled. A needed controller that cannot be enabled is an error; the others are
/// dropped. When `dir` is this process's own cgroup and it is alone there, it first moves itself into a leaf
/// child so that `dir` has no processes of its own.
fn enable_controllers(
    dir: &Path,
    attach: &[&'static str],
    needed: &dyn Fn(&str) -> bool,
    is_own: bool,
    our_pid: u32,
) -> Result<Vec<&'static str>, CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    // Read once: enabling one controller enables no other.
    let already = read_words(&control)?;
    let mut enabled = Vec::new();
    let mut moved_out = false;
    for &controller in attach {
        if already.iter().any(|c| c == controller) {
            enabled.push(controller);
            continue;
        }
        let mut result = write_value(&control, &format!("+{controller}"));
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EBUSY)) && is_own && !moved_out {
            moved_out = move_self_to_leaf(dir, our_pid)?;
            if moved_out {
                result = write_value(&control, &format!("+{controller}"));
            }
        }
        match result {
            Ok(()) => enabled.push(controller),
            Err(_) if !needed(controller) => {}
            Err(e) => {
                let busy = e.raw_os_error() == Some(libc::EBUSY);
                return Err(CgroupError::ControllerUnavailable {
                    controller,
                    reason: if busy {
                        format!(
                            "cannot enable it in {}: that cgroup has processes of its own, and cgroup v2 lets \
                             only a cgroup without processes enable controllers for its children",
                            control.display()
                        )
                    } else {
                        format!("cannot enable it in {}: {e}", control.display())
                    },
                    fix: if busy {
                        "run airlock in a cgroup of its own: systemd-run --user --scope -p Delegate=yes airlock \
                         run ...; in a container, first move its processes into a child cgroup (as \
                         Docker-in-Docker's entrypoint does)"
                            .to_string()
                    } else {
                        FIX_V2_ENABLE_AS_ROOT.to_string()
                    },
                });
            }
        }
    }
    Ok(enabled)
}

/// Moves this process into `dir/airlock-supervisor` if it is the only process in `dir`. Returns whether it
/// did. Others' processes are never moved.
fn move_self_to_leaf(dir: &Path, our_pid: u32) -> Result<bool, CgroupError> {
    let members = read_pids(&dir.join("cgroup.procs"))?;
    if members != [our_pid as i32] {
        return Ok(false);
    }
    let leaf = dir.join(SUPERVISOR_LEAF);
    make_dir_if_missing(&leaf)?;
    let procs = leaf.join("cgroup.procs");
    write_value(&procs, &our_pid.to_string()).map_err(|source| CgroupError::AddProcess {
        pid: our_pid as i32,
        path: leaf.clone(),
        source,
    })?;
    Ok(true)
}

/// How much of a cgroup's numbers to read: see [`SandboxCgroup::stats`] and [`SandboxCgroup::verdicts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    All,
    Verdicts,
}

fn stats_v2(dir: &Path, reading: Reading) -> Result<CgroupStats, CgroupError> {
    let all = reading == Reading::All;
    let mut stats = CgroupStats {
        oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill")?,
        pids_max_hits: read_keyed(&dir.join("pids.events"), "max")?,
        ..CgroupStats::default()
    };
    if all || stats.oom_killed() {
        stats.memory_peak = read_u64(&dir.join("memory.peak"))?;
        stats.memory_limit = read_limit(&dir.join("memory.max"))?;
    }
    if all || stats.pids_max_hits.unwrap_or(0) > 0 {
        stats.pids_limit = read_limit(&dir.join("pids.max"))?;
    }
    if all {
        stats.memory_current = read_u64(&dir.join("memory.current"))?;
        stats.pids_current = read_u64(&dir.join("pids.current"))?;
        stats.pids_peak = read_u64(&dir.join("pids.peak"))?;
        stats.cpu_usage_usec = read_keyed(&dir.join("cpu.stat"), "usage_usec")?;
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------------------------
// cgroup v1.

fn plan_v1(
    hierarchies: [&Option<PathBuf>; 4],
    host: &HostView<'_>,
    name: String,
    limits: &Limits,
    cpu_quota: Option<u64>,
    accounting: Accounting,
) -> Result<PlannedCgroup, CgroupError> {
    let [memory, pids, cpu, cpuacct] = hierarchies;
    // Find every base first, so that a limit that cannot be enforced fails before anything is created.
    let needed = [limits.memory_bytes.is_some(), limits.pids.is_some(), cpu_quota.is_some(), false];
    let mut bases = [None, None, None, None];
    for (i, (hierarchy, controller)) in
        [(memory, "memory"), (pids, "pids"), (cpu, "cpu"), (cpuacct, "cpuacct")].into_iter().enumerate()
    {
        bases[i] = v1_base(hierarchy.as_deref(), controller, needed[i], host)?;
    }
    // A hierarchy no limit needs is used only for the numbers, when they have a reader. Its `airlock/` is still
    // swept for stale cgroups (a sandbox that counted everything may have left one there), unless it is one of
    // ours (co-mounted hierarchies share one), which is swept anyway.
    let used = |i: usize| needed[i] || accounting == Accounting::Full;
    let used_parents: Vec<PathBuf> =
        (0..bases.len()).filter(|&i| used(i)).filter_map(|i| Some(bases[i].as_ref()?.join(AIRLOCK_DIR))).collect();
    let mut other_parents: Vec<PathBuf> = Vec::new();
    for i in (0..bases.len()).filter(|&i| !used(i)) {
        if let Some(parent) = bases[i].take().map(|b| b.join(AIRLOCK_DIR)) {
            if !used_parents.contains(&parent) && !other_parents.contains(&parent) {
                other_parents.push(parent);
            }
        }
    }
    let [memory_base, pids_base, cpu_base, cpuacct_base] = bases;
    if memory_base.is_none() && pids_base.is_none() && cpu_base.is_none() && cpuacct_base.is_none() {
        return Err(CgroupError::ControllerUnavailable {
            controller: "cgroup",
            reason: format!("none of the memory, pids, cpu and cpuacct hierarchies is writable by uid {}", host.euid),
            fix: FIX_V1.to_string(),
        });
    }
    // Co-mounted hierarchies have the same base, and so the same directory.
    let dir = |base: Option<PathBuf>| base.map(|b| b.join(AIRLOCK_DIR).join(&name));
    let dirs =
        Dirs::V1 { memory: dir(memory_base), pids: dir(pids_base), cpu: dir(cpu_base), cpuacct: dir(cpuacct_base) };
    Ok(PlannedCgroup {
        dirs,
        name,
        memory_bytes: limits.memory_bytes,
        pids: limits.pids,
        cpu_quota,
        owner_pid: host.owner.pid,
        other_parents,
    })
}

fn make_v1_dirs(
    planned: [Option<PathBuf>; 4],
    name: String,
    owner_pid: u32,
    other_parents: Vec<PathBuf>,
) -> Result<SandboxCgroup, CgroupError> {
    let mut cgroup = SandboxCgroup {
        name,
        dirs: Dirs::V1 { memory: None, pids: None, cpu: None, cpuacct: None },
        teardown_on_drop_in: Some(owner_pid),
        other_parents,
    };
    // Each directory is recorded as soon as it exists: an error drops `cgroup`, which removes them (and only
    // them: a directory that was there already is not ours to remove).
    let mut made: Vec<PathBuf> = Vec::new();
    for (index, dir) in planned.into_iter().enumerate() {
        let Some(dir) = dir else { continue };
        if !made.contains(&dir) {
            // `airlock/` is there after the first sandbox: its `mkdir` is tried only when ours finds it missing.
            match make_dir(&dir) {
                Err(CgroupError::CreateDir { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    if let Some(parent) = dir.parent() {
                        make_dir_if_missing(parent)?;
                    }
                    make_dir(&dir)?;
                }
                other => other?,
            }
            made.push(dir.clone());
        }
        if let Dirs::V1 { memory, pids, cpu, cpuacct } = &mut cgroup.dirs {
            let slot = [memory, pids, cpu, cpuacct].into_iter().nth(index);
            if let Some(slot) = slot {
                *slot = Some(dir);
            }
        }
    }
    Ok(cgroup)
}

/// The base cgroup in a v1 hierarchy, or `None` when the hierarchy is unusable and no limit needs it.
fn v1_base(
    hierarchy: Option<&Path>,
    controller: &'static str,
    needed: bool,
    host: &HostView<'_>,
) -> Result<Option<PathBuf>, CgroupError> {
    // Root that cannot write the hierarchy is in a container, which mounts cgroupfs read-only.
    let fix = if host.euid == 0 { FIX_IN_CONTAINER } else { FIX_V1 };
    let fail = |reason: String| {
        if needed {
            Err(CgroupError::ControllerUnavailable { controller, reason, fix: fix.to_string() })
        } else {
            Ok(None)
        }
    };
    let Some(hierarchy) = hierarchy else {
        return fail(format!("no cgroup v1 {controller} hierarchy is mounted"));
    };
    match delegation_root(hierarchy, own_path(host.own, Some(controller))) {
        Some(base) => Ok(Some(base)),
        None => {
            fail(format!("the {controller} hierarchy at {} is not writable by uid {}", hierarchy.display(), host.euid))
        }
    }
}

const FIX_IN_CONTAINER: &str = "in a container, which mounts the cgroup hierarchies read-only, set the limits on \
     the container itself (docker run --memory, --pids-limit, --cpus) or give it a writable cgroup";
const FIX_V1: &str = "cgroup v1 has no delegation to ordinary users: run airlock as root, or boot with \
     systemd.unified_cgroup_hierarchy=1 (cgroup v2) and use systemd-run --user --scope -p Delegate=yes";

/// Memory limit on v1. The memory+swap limit must never be below the memory limit, so when lowering, memory
/// goes first, and when raising, memory+swap. Without swap accounting (no `memory.memsw.*`), swappiness 0 keeps
/// the cgroup's pages out of swap instead. `oom_kill_disable` is inherited from the parent; it is set to 0 so an
/// allocation over the limit kills rather than hangs.
fn limit_memory_v1(dir: &Path, bytes: Option<u64>) -> Result<(), CgroupError> {
    write_if_present(&dir.join("memory.oom_control"), "0")?;
    let Some(bytes) = bytes else { return Ok(()) };
    let memory = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    if memsw.is_file() {
        let lowering = match read_u64(&memory)? {
            Some(current) => bytes <= current,
            None => true,
        };
        if lowering {
            write_limit(&memory, &value)?;
            write_limit(&memsw, &value)?;
        } else {
            write_limit(&memsw, &value)?;
            write_limit(&memory, &value)?;
        }
    } else {
        write_limit(&memory, &value)?;
        write_if_present(&dir.join("memory.swappiness"), "0")?;
    }
    Ok(())
}

fn stats_v1(
    memory: Option<&Path>,
    pids: Option<&Path>,
    cpuacct: Option<&Path>,
    reading: Reading,
) -> Result<CgroupStats, CgroupError> {
    let all = reading == Reading::All;
    let mut stats = CgroupStats::default();
    if let Some(dir) = memory {
        stats.oom_kills = read_keyed(&dir.join("memory.oom_control"), "oom_kill")?;
        if all || stats.oom_killed() {
            stats.memory_peak = read_u64(&dir.join("memory.max_usage_in_bytes"))?;
            stats.memory_limit = read_u64(&dir.join("memory.limit_in_bytes"))?.filter(|&l| l < V1_UNLIMITED_FROM);
        }
        if all {
            stats.memory_current = read_u64(&dir.join("memory.usage_in_bytes"))?;
        }
    }
    if let Some(dir) = pids {
        stats.pids_max_hits = read_keyed(&dir.join("pids.events"), "max")?;
        if all || stats.pids_max_hits.unwrap_or(0) > 0 {
            stats.pids_limit = read_limit(&dir.join("pids.max"))?;
        }
        if all {
            stats.pids_current = read_u64(&dir.join("pids.current"))?;
            stats.pids_peak = read_u64(&dir.join("pids.peak"))?;
        }
    }
    if let (Some(dir), true) = (cpuacct, all) {
        stats.cpu_usage_usec = read_u64(&dir.join("cpuacct.usage"))?.map(|ns| ns / 1000);
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------------------------
// Killing and removing.

/// Removes the cgroups of airlock processes that died without tearing down (killed with `SIGKILL`, say): every
/// `airlock/<name>` under the bases this process would use whose recorded owner is dead (see the module
/// documentation). Their processes are killed first. Returns the directories removed. Entries airlock did not
/// name, and those whose owner may be alive, are left alone. Every stale cgroup is tried; the first error is
/// returned after that.
pub fn remove_stale_cgroups(layout: &CgroupLayout) -> Result<Vec<PathBuf>, CgroupError> {
    let own = read_own_cgroups()?;
    let ns = Path::new("/proc/self/ns/pid");
    let our_pid_namespace = fs::metadata(ns).map_err(|source| read_error(ns, source))?.ino();
    remove_stale_with(layout, &own, our_pid_namespace, &[])
}

/// [`remove_stale_cgroups`], from the process that owns `ours`: an `airlock/` directory holding no cgroup but
/// ours is not listed (see `remove_stale_with`).
///
/// The `airlock/` directories swept are those ours is in, and those of the usable hierarchies ours left out
/// ([`Accounting::LimitsOnly`]); our pid namespace is the one ours is named after: nothing is looked up again
/// (`/proc/self/cgroup`, the delegation checks) that planning ours found already.
pub fn remove_stale_cgroups_beside(ours: &SandboxCgroup) -> Result<Vec<PathBuf>, CgroupError> {
    let Some((owner, _)) = CgroupOwner::from_cgroup_name(&ours.name) else {
        return Ok(Vec::new());
    };
    let is_v2 = matches!(ours.dirs, Dirs::V2 { .. });
    let mut parents: Vec<(PathBuf, bool)> = Vec::new();
    let others = ours.other_parents.iter().map(PathBuf::as_path);
    for parent in ours.paths().into_iter().filter_map(Path::parent).chain(others) {
        if !parents.iter().any(|(q, _)| q == parent) {
            parents.push((parent.to_path_buf(), is_v2));
        }
    }
    sweep_parents(parents, owner.pid_namespace, &ours.paths())
}

/// The bases under which this process creates `airlock/<name>` cgroups, with whether each is v2.
fn sandbox_bases(layout: &CgroupLayout, own: &[CgroupEntry]) -> Vec<(PathBuf, bool)> {
    match layout {
        CgroupLayout::V2 { root } => {
            delegation_root(root, own_path(own, None)).map(|b| (b, true)).into_iter().collect()
        }
        CgroupLayout::V1 { memory, pids, cpu, cpuacct } => {
            [(memory, "memory"), (pids, "pids"), (cpu, "cpu"), (cpuacct, "cpuacct")]
                .into_iter()
                .filter_map(|(h, c)| delegation_root(h.as_deref()?, own_path(own, Some(c))))
                .map(|b| (b, false))
                .collect()
        }
    }
}

/// The cgroup of the running sandbox called `sandbox` (its `--name`), for `airlock stats`; `None` when no live
/// sandbox of that name has one. Never tears anything down.
pub fn find_sandbox_cgroup(layout: &CgroupLayout, sandbox: &str) -> Result<Option<SandboxCgroup>, CgroupError> {
    let own = read_own_cgroups()?;
    let ns = Path::new("/proc/self/ns/pid");
    let our_pid_namespace = fs::metadata(ns).map_err(|source| read_error(ns, source))?.ino();
    for (base, _) in sandbox_bases(layout, &own) {
        let parent = base.join(AIRLOCK_DIR);
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some((owner, name_part)) = CgroupOwner::from_cgroup_name(&name) else { continue };
            if name_part == sandbox && owner.may_be_alive(our_pid_namespace) {
                return SandboxCgroup::open(layout, &name);
            }
        }
    }
    Ok(None)
}

fn remove_stale_with(
    layout: &CgroupLayout,
    own: &[CgroupEntry],
    our_pid_namespace: u64,
    ours: &[&Path],
) -> Result<Vec<PathBuf>, CgroupError> {
    let parents = sandbox_bases(layout, own).into_iter().map(|(base, is_v2)| (base.join(AIRLOCK_DIR), is_v2)).collect();
    sweep_parents(parents, our_pid_namespace, ours)
}

/// Removes the stale cgroups in each `airlock/` directory of `parents` (with whether it is v2), which may hold
/// `ours` (made by this process, so alive: never listed as stale, and counted without a `statx`).
fn sweep_parents(
    parents: Vec<(PathBuf, bool)>,
    our_pid_namespace: u64,
    ours: &[&Path],
) -> Result<Vec<PathBuf>, CgroupError> {
    // name -> its directories in every hierarchy, so that all of a sandbox's processes are killed together.
    let mut stale: BTreeMap<String, (Vec<PathBuf>, bool)> = BTreeMap::new();
    for (parent, is_v2) in parents {
        // Most runs find nothing to sweep, and can tell without listing: a cgroup directory's link count is 2
        // plus the number of cgroups below it (cgroupfs keeps it so, as tmpfs and ext4 do), so 2, plus one for
        // each of `ours` in it, means there is no other. (Anything else, as on filesystems that report 1 for
        // every directory, is listed.)
        let ours_here = ours.iter().filter(|d| d.parent() == Some(parent.as_path())).count() as u64;
        match fs::metadata(&parent) {
            Ok(meta) if meta.nlink() == 2 + ours_here => continue,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(read_error(&parent, source)),
        }
        let entries = match fs::read_dir(&parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(read_error(&parent, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| read_error(&parent, source))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some((owner, _)) = CgroupOwner::from_cgroup_name(&name) else { continue };
            if entry.path().is_dir() && !owner.may_be_alive(our_pid_namespace) {
                let slot = stale.entry(name).or_insert_with(|| (Vec::new(), is_v2));
                if !slot.0.contains(&entry.path()) {
                    slot.0.push(entry.path());
                }
            }
        }
    }
    let mut removed = Vec::new();
    let mut first_error = None;
    for (dirs, is_v2) in stale.into_values() {
        let paths: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        match teardown(&paths, is_v2) {
            Ok(()) => removed.extend(dirs),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Kills everything in `dirs` and removes them, each after its descendants.
fn teardown(dirs: &[&Path], is_v2: bool) -> Result<(), CgroupError> {
    // Usually there is nothing to kill: a sandbox's processes die with its init (the kernel kills a pid
    // namespace's every process when its pid 1 exits). One `rmdir` each then suffices, and it is proof enough:
    // the kernel refuses (EBUSY) to remove a cgroup that still has a process or a cgroup below it. Whatever it
    // refused gets the full treatment: listed, killed, removed after its descendants.
    let dirs: Vec<&Path> = dirs
        .iter()
        .copied()
        .filter(|dir| match fs::remove_dir(dir) {
            Ok(()) => false,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        })
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let killed = kill_dirs(&dirs, is_v2);
    let mut removed = Ok(());
    for dir in &dirs {
        if let Err(e) = remove_tree(dir, Instant::now() + TEARDOWN_TIMEOUT) {
            removed = removed.and(Err(e));
        }
    }
    killed.and(removed)
}

/// Kills every process in `dirs` and their descendant cgroups, until all are empty.
fn kill_dirs(dirs: &[&Path], is_v2: bool) -> Result<(), CgroupError> {
    let deadline = Instant::now() + TEARDOWN_TIMEOUT;
    // Without cgroup.kill, freeze first (v2, 5.2+) so that members cannot fork while they are being killed;
    // SIGKILL still reaches frozen tasks.
    let atomic_kill = is_v2 && dirs.iter().all(|d| d.join("cgroup.kill").is_file());
    let frozen: Vec<&Path> = if is_v2 && !atomic_kill {
        dirs.iter().copied().filter(|d| write_value(&d.join("cgroup.freeze"), "1").is_ok()).collect()
    } else {
        Vec::new()
    };
    let result = kill_rounds(dirs, atomic_kill, deadline);
    for dir in frozen {
        let _ = write_value(&dir.join("cgroup.freeze"), "0");
    }
    result
}

fn kill_rounds(dirs: &[&Path], atomic_kill: bool, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        let mut tree = Vec::new();
        for dir in dirs {
            collect_tree(dir, &mut tree)?;
        }
        let mut listed = 0;
        for dir in &tree {
            let procs = dir.join("cgroup.procs");
            if atomic_kill {
                listed += read_pids(&procs)?.len();
            } else {
                listed += sigkill_members(dir)?;
            }
        }
        if listed == 0 {
            return Ok(());
        }
        if atomic_kill {
            for dir in dirs {
                write_limit(&dir.join("cgroup.kill"), "1").or_else(ignore_missing)?;
            }
        }
        if Instant::now() >= deadline {
            let path = dirs.first().map(|d| d.to_path_buf()).unwrap_or_default();
            return Err(CgroupError::KillTimedOut { path, seconds: TEARDOWN_TIMEOUT.as_secs() });
        }
        sleep(TEARDOWN_PAUSE);
    }
}

/// A directory that vanished while being killed needs no more killing.
fn ignore_missing(e: CgroupError) -> Result<(), CgroupError> {
    match &e {
        CgroupError::Write { source, .. } if source.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

/// `dir` and every cgroup below it, parents first. A directory that is gone has nothing to list.
fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(read_error(dir, source)),
    };
    out.push(dir.to_path_buf());
    for entry in entries {
        let entry = entry.map_err(|source| read_error(dir, source))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_tree(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// Sends `SIGKILL` to each process listed in `dir/cgroup.procs`; returns how many were listed. Each pid is
/// opened as a pidfd first, and signalled only if still listed afterwards: then the pidfd is that member (or a
/// process that has exited since, which the kernel refuses to signal), never a stranger that reused the pid.
fn sigkill_members(dir: &Path) -> Result<usize, CgroupError> {
    let procs = dir.join("cgroup.procs");
    let listed = read_pids(&procs)?;
    let mut opened = Vec::with_capacity(listed.len());
    for &pid in &listed {
        match sys::process::pidfd_open(pid) {
            Ok(fd) => opened.push((pid, Some(fd))),
            Err(libc::ESRCH) => {}
            // Before 5.3: no pidfds; the pid is signalled directly, still only if listed again.
            Err(libc::ENOSYS) => opened.push((pid, None)),
            Err(errno) => return Err(kill_error(pid, dir, errno)),
        }
    }
    let confirmed = read_pids(&procs)?;
    for (pid, fd) in opened.iter().filter(|(pid, _)| confirmed.contains(pid)) {
        let sent = match fd {
            Some(fd) => pidfd_send_sigkill(fd),
            None => sys::signal::kill(*pid, libc::SIGKILL),
        };
        match sent {
            Ok(()) | Err(libc::ESRCH) => {}
            Err(errno) => return Err(kill_error(*pid, dir, errno)),
        }
    }
    Ok(listed.len())
}

fn kill_error(pid: i32, dir: &Path, errno: Errno) -> CgroupError {
    CgroupError::KillProcess { pid, path: dir.to_path_buf(), source: io::Error::from_raw_os_error(errno) }
}

fn pidfd_send_sigkill(pidfd: &OwnedFd) -> Result<(), Errno> {
    sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL)
}

/// Removes `dir` after its descendant cgroups, retrying while it is busy.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    let mut children = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                children.push(entry.path());
            }
        }
    }
    for child in children {
        remove_tree(&child, deadline)?;
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => sleep(TEARDOWN_PAUSE),
            Err(source) => return Err(CgroupError::RemoveDir { path: dir.to_path_buf(), source }),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Files.

/// Writes `value` into an existing cgroup file in one `write` (cgroupfs takes each write as one value). Never
/// creates a file: a missing interface file means the kernel lacks the feature.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    #[cfg(test)]
    tests::record_write(path, value);
    file.write_all(value.as_bytes())
}

fn write_limit(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_value(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Writes `value` if the kernel has the file.
fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    // The open says whether it is there (no `statx` first: one system call fewer per file).
    match write_limit(path, value) {
        Err(CgroupError::Write { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|source| CgroupError::CreateDir { path: path.to_path_buf(), source })?;
    #[cfg(test)]
    tests::kernel_fills_new_cgroup(path);
    Ok(())
}

fn make_dir_if_missing(path: &Path) -> Result<(), CgroupError> {
    match make_dir(path) {
        Err(CgroupError::CreateDir { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn read_error(path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Read { path: path.to_path_buf(), source }
}

/// A file's content; `None` when the kernel does not have the file.
fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match crate::host::read_small(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(read_error(path, source)),
    }
}

fn parse_error(path: &Path, content: &str) -> CgroupError {
    CgroupError::Parse { path: path.to_path_buf(), content: content.to_string() }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else { return Ok(None) };
    text.trim().parse().map(Some).map_err(|_| parse_error(path, &text))
}

/// A v2-style limit: a number, or `max` for none.
fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else { return Ok(None) };
    match text.trim() {
        "max" => Ok(None),
        value => value.parse().map(Some).map_err(|_| parse_error(path, &text)),
    }
}

/// The value of `key` in a flat-keyed file (`key value` lines: `memory.events`, `cpu.stat`).
fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let Some(text) = read_optional(path)? else { return Ok(None) };
    parse_keyed(&text, key).map_err(|()| parse_error(path, &text))
}

fn parse_keyed(text: &str, key: &str) -> Result<Option<u64>, ()> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            return fields.next().and_then(|v| v.parse().ok()).map(Some).ok_or(());
        }
    }
    Ok(None)
}

fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    let text = fs::read_to_string(path).map_err(|source| read_error(path, source))?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

fn words_or_none(words: &[String]) -> String {
    if words.is_empty() {
        "none".to_string()
    } else {
        words.join(" ")
    }
}

/// The pids listed in a `cgroup.procs`; none when the cgroup is gone.
fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let Some(text) = read_optional(path)? else { return Ok(Vec::new()) };
    text.split_whitespace().map(|p| p.parse().map_err(|_| parse_error(path, &text))).collect()
}

/// Whether this process may write `path`, by its effective ids (as the kernel will judge the write).
fn is_writable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    sys::fd::effective_access(&c_path, libc::W_OK)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Unit tests stand a temporary directory in for cgroupfs (as youki does): [`FakeKernel`] fills each new
    //! directory with the interface files the kernel would create, and every write is recorded, so a test sees
    //! exactly which files `create` wrote, with which values, in which order. `real_v1` below uses this
    //! machine's cgroup v1 hierarchies.

    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The interface files a new cgroup gets under one hierarchy of the fake.
    struct FakeKernel {
        hierarchies: Vec<(PathBuf, Vec<(&'static str, String)>)>,
    }

    thread_local! {
        static FAKE: RefCell<Option<FakeKernel>> = const { RefCell::new(None) };
        static WRITES: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record_write(path: &Path, value: &str) {
        WRITES.with(|w| w.borrow_mut().push((path.to_path_buf(), value.to_string())));
    }

    pub(super) fn kernel_fills_new_cgroup(dir: &Path) {
        FAKE.with(|fake| {
            let fake = fake.borrow();
            let Some(fake) = fake.as_ref() else { return };
            // The deepest hierarchy containing `dir` (co-mounted ones share a path).
            let files =
                fake.hierarchies.iter().filter(|(root, _)| dir.starts_with(root)).max_by_key(|(r, _)| r.iter().count());
            for (name, content) in files.map(|(_, f)| f.as_slice()).unwrap_or_default() {
                fs::write(dir.join(name), content).unwrap();
            }
        });
    }

    /// The writes recorded so far, with paths relative to `root`, and a fresh record.
    fn take_writes(root: &Path) -> Vec<(String, String)> {
        WRITES
            .with(|w| std::mem::take(&mut *w.borrow_mut()))
            .into_iter()
            .map(|(p, v)| (p.strip_prefix(root).unwrap_or(&p).to_string_lossy().to_string(), v))
            .collect()
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("airlock-cgroups-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn file(&self, relative: &str, content: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            FAKE.with(|f| f.borrow_mut().take());
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const OWNER: CgroupOwner = CgroupOwner { pid_namespace: 4026531836, pid: 4242, start_time: 777 };

    /// A host view whose owner is not this process, so that dropping a cgroup made on the fake never tears down.
    fn host(own: &[CgroupEntry], euid: u32) -> HostView<'_> {
        HostView { own, owner: OWNER, euid }
    }

    fn limits(memory: Option<u64>, pids: Option<u64>, cpus: Option<f64>) -> Limits {
        Limits { memory_bytes: memory, pids, cpus, disk_bytes: Some(1 << 30), ..Limits::default() }
    }

    fn files(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(n, c)| (*n, c.to_string())).collect()
    }

    fn v2_cgroup_files() -> Vec<(&'static str, String)> {
        files(&[
            ("cgroup.procs", ""),
            ("cgroup.controllers", "cpu memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.kill", ""),
            ("cgroup.freeze", "0"),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.current", "0"),
            ("memory.peak", "0"),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"),
            ("pids.max", "max"),
            ("pids.current", "0"),
            ("pids.events", "max 0\n"),
            ("cpu.max", "max 100000"),
            ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
        ])
    }

    /// A pure v2 root with `controllers` available and `enabled` in its subtree_control.
    fn fake_v2(controllers: &str, enabled: &str, new_cgroup: Vec<(&'static str, String)>) -> TempDir {
        let dir = TempDir::new();
        dir.file("cgroup.controllers", controllers);
        dir.file("cgroup.subtree_control", enabled);
        dir.file("cgroup.procs", "1\n");
        FAKE.with(|f| *f.borrow_mut() = Some(FakeKernel { hierarchies: vec![(dir.0.clone(), new_cgroup)] }));
        take_writes(&dir.0);
        dir
    }

    const UNLIMITED_V1: &str = "9223372036854771712\n";

    fn v1_memory_files(with_memsw: bool) -> Vec<(&'static str, String)> {
        let mut list = files(&[
            ("cgroup.procs", ""),
            ("tasks", ""),
            ("memory.limit_in_bytes", UNLIMITED_V1),
            ("memory.usage_in_bytes", "0"),
            ("memory.max_usage_in_bytes", "0"),
            ("memory.oom_control", "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n"),
            ("memory.swappiness", "60"),
        ]);
        if with_memsw {
            list.push(("memory.memsw.limit_in_bytes", UNLIMITED_V1.to_string()));
        }
        list
    }

    /// v1 hierarchies like this machine's: memory, pids, cpu and cpuacct mounted apart, plus an empty unified
    /// hierarchy (hybrid).
    fn fake_v1(with_memsw: bool) -> TempDir {
        let dir = TempDir::new();
        for h in ["memory", "pids", "cpu", "cpuacct", "devices"] {
            dir.file(&format!("{h}/tasks"), "");
            dir.file(&format!("{h}/cgroup.procs"), "1\n");
        }
        dir.file("unified/cgroup.controllers", "");
        let base = |h: &str| fs::canonicalize(dir.0.join(h)).unwrap();
        let hierarchies = vec![
            (base("memory"), v1_memory_files(with_memsw)),
            (base("pids"), files(&[("cgroup.procs", ""), ("tasks", ""), ("pids.max", "max"), ("pids.current", "0")])),
            (base("cpu"), files(&[("cgroup.procs", ""), ("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")])),
            (base("cpuacct"), files(&[("cgroup.procs", ""), ("cpuacct.usage", "0")])),
        ];
        FAKE.with(|f| *f.borrow_mut() = Some(FakeKernel { hierarchies }));
        take_writes(&dir.0);
        dir
    }

    fn read(path: impl AsRef<Path>) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    // -- layout detection ------------------------------------------------------------------------------------

    #[test]
    fn detects_pure_v2() {
        let dir = TempDir::new();
        dir.file("cgroup.controllers", "cpu memory pids");
        assert_eq!(detect_layout(&dir.0).unwrap(), CgroupLayout::V2 { root: dir.0.clone() });
    }

    #[test]
    fn detects_hybrid_as_v1_when_the_controllers_are_on_v1() {
        let dir = fake_v1(true);
        let canonical = |h: &str| Some(fs::canonicalize(dir.0.join(h)).unwrap());
        assert_eq!(
            detect_layout(&dir.0).unwrap(),
            CgroupLayout::V1 {
                memory: canonical("memory"),
                pids: canonical("pids"),
                cpu: canonical("cpu"),
                cpuacct: canonical("cpuacct")
            }
        );
    }

    #[test]
    fn detects_v1_with_comounted_cpu_and_cpuacct() {
        let dir = TempDir::new();
        dir.file("memory/tasks", "");
        dir.file("cpu,cpuacct/tasks", "");
        std::os::unix::fs::symlink("cpu,cpuacct", dir.0.join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", dir.0.join("cpuacct")).unwrap();
        let both = Some(fs::canonicalize(dir.0.join("cpu,cpuacct")).unwrap());
        let memory = Some(fs::canonicalize(dir.0.join("memory")).unwrap());
        assert_eq!(
            detect_layout(&dir.0).unwrap(),
            CgroupLayout::V1 { memory, pids: None, cpu: both.clone(), cpuacct: both }
        );
    }

    #[test]
    fn limits_only_on_comounted_cpu_and_cpuacct_sweeps_their_one_airlock_dir_as_ours() {
        let dir = TempDir::new();
        for f in ["memory/tasks", "memory/cgroup.procs", "cpu,cpuacct/tasks", "cpu,cpuacct/cgroup.procs"] {
            dir.file(f, "");
        }
        std::os::unix::fs::symlink("cpu,cpuacct", dir.0.join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", dir.0.join("cpuacct")).unwrap();
        let layout = detect_layout(&dir.0).unwrap();
        let own = parse_proc_cgroup("0::/\n");
        let plan = |limits: &Limits| match plan_with(&layout, &host(&own, 0), "b", limits, Accounting::LimitsOnly) {
            Ok(CgroupPlan::Deferred(planned)) => planned,
            other => panic!("{other:?}"),
        };
        let memory_airlock = fs::canonicalize(dir.0.join("memory")).unwrap().join(AIRLOCK_DIR);
        let shared_airlock = fs::canonicalize(dir.0.join("cpu,cpuacct")).unwrap().join(AIRLOCK_DIR);
        // --cpus: the cpu directory is ours, and cpuacct's `airlock/` is the same one: nothing else to sweep.
        assert_eq!(plan(&limits(None, None, Some(0.5))).other_parents, vec![memory_airlock]);
        // --memory: the shared `airlock/` is left out, once.
        assert_eq!(plan(&limits(Some(32 << 20), None, None)).other_parents, vec![shared_airlock]);
    }

    #[test]
    fn detects_hybrid_with_controllers_on_unified_as_v2() {
        let dir = TempDir::new();
        dir.file("devices/tasks", "");
        dir.file("unified/cgroup.controllers", "cpu memory pids");
        assert_eq!(detect_layout(&dir.0).unwrap(), CgroupLayout::V2 { root: dir.0.join("unified") });
    }

    #[test]
    fn detects_no_cgroupfs() {
        let dir = TempDir::new();
        assert!(matches!(detect_layout(&dir.0), Err(CgroupError::NotMounted { .. })));
    }

    // -- v2 ----------------------------------------------------------------------------------------------------

    #[test]
    fn v2_create_writes_exactly_the_limits() {
        let dir = fake_v2("cpuset cpu io memory pids", "", v2_cgroup_files());
        let own = parse_proc_cgroup("0::/user.slice/session-1.scope\n");
        let layout = CgroupLayout::V2 { root: dir.0.clone() };
        let cgroup = create_with(&layout, &host(&own, 0), "box", &limits(Some(32 << 20), Some(16), Some(0.5))).unwrap();

        assert_eq!(cgroup.name(), "4026531836-4242-777-box");
        let d = "airlock/4026531836-4242-777-box";
        assert_eq!(cgroup.path(), dir.0.join(d));
        assert_eq!(
            take_writes(&dir.0),
            pairs(&[
                ("cgroup.subtree_control", "+memory"),
                ("cgroup.subtree_control", "+pids"),
                ("cgroup.subtree_control", "+cpu"),
                ("airlock/cgroup.subtree_control", "+memory"),
                ("airlock/cgroup.subtree_control", "+pids"),
                ("airlock/cgroup.subtree_control", "+cpu"),
                (&format!("{d}/memory.max"), "33554432"),
                (&format!("{d}/memory.swap.max"), "0"),
                (&format!("{d}/pids.max"), "16"),
                (&format!("{d}/cpu.max"), "50000 100000"),
            ])
        );
        assert_eq!(read(dir.0.join(d).join("cpu.max")), "50000 100000");
        let opened = SandboxCgroup::open(&layout, cgroup.name()).unwrap().unwrap();
        assert_eq!(opened.paths(), cgroup.paths());
        assert!(SandboxCgroup::open(&layout, "4026531836-1-2-other").unwrap().is_none());
        assert!(matches!(SandboxCgroup::open(&layout, "../x"), Err(CgroupError::InvalidName { .. })));
        cgroup.add_process(12345).unwrap();
        assert_eq!(take_writes(&dir.0), pairs(&[(&format!("{d}/cgroup.procs"), "12345")]));
    }

    #[test]
    fn v2_skips_enabled_controllers_and_absent_swap_and_unneeded_cpu() {
        let mut new_cgroup = v2_cgroup_files();
        new_cgroup.retain(|(n, _)| *n != "memory.swap.max" && !n.starts_with("cpu."));
        new_cgroup.push(("cgroup.subtree_control", "memory pids".to_string()));
        // `cpu` is not available at all, and no limit needs it: the cgroup is made without it.
        let dir = fake_v2("memory pids", "memory pids", new_cgroup);
        let own = parse_proc_cgroup("0::/\n");
        let layout = CgroupLayout::V2 { root: dir.0.clone() };
        let cgroup = create_with(&layout, &host(&own, 0), "b", &limits(Some(1 << 30), None, None)).unwrap();
        let d = cgroup.path().strip_prefix(&dir.0).unwrap().to_string_lossy().to_string();
        // The new airlock/ directory's subtree_control already lists both (the fake fills it so).
        assert_eq!(take_writes(&dir.0), pairs(&[(&format!("{d}/memory.max"), "1073741824")]));
    }

    #[test]
    fn v2_missing_controller_for_a_limit_fails_closed_before_creating_anything() {
        let dir = fake_v2("memory pids", "", v2_cgroup_files());
        let own = parse_proc_cgroup("0::/\n");
        let layout = CgroupLayout::V2 { root: dir.0.clone() };
        let err = create_with(&layout, &host(&own, 1000), "b", &limits(None, None, Some(1.0))).unwrap_err();
        match &err {
            CgroupError::ControllerUnavailable { controller, reason, fix } => {
                assert_eq!(*controller, "cpu");
                assert!(reason.contains("not delegated"), "{reason}");
                assert!(fix.contains("Delegate="), "{fix}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!dir.0.join(AIRLOCK_DIR).exists());
        assert!(take_writes(&dir.0).is_empty());
    }

    #[test]
    fn v2_base_is_the_topmost_writable_cgroup_on_the_way_to_our_own() {
        // As root the hierarchy's root is writable; as a user, the first writable cgroup on the way down.
        let dir = fake_v2("memory pids cpu", "", v2_cgroup_files());
        fs::create_dir_all(dir.0.join("user.slice/user@1000.service/app.slice")).unwrap();
        let own = "/user.slice/user@1000.service/app.slice";
        assert_eq!(delegation_root(&dir.0, own), Some(dir.0.clone()));
        assert_eq!(delegation_root(&dir.0, "/../escape"), Some(dir.0.clone()));
        if sys_is_root() {
            println!("SKIP: the not-delegated case needs a non-root uid (root may write every directory)");
            return;
        }
        let mut perms = fs::metadata(&dir.0).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        fs::set_permissions(&dir.0, perms).unwrap();
        fs::write(dir.0.join("user.slice/user@1000.service/cgroup.procs"), "").unwrap();
        let delegated = dir.0.join("user.slice/user@1000.service");
        assert_eq!(delegation_root(&dir.0, own), Some(delegated));
    }

    fn sys_is_root() -> bool {
        crate::host::is_host_root()
    }

    #[test]
    fn v2_stats_parse() {
        let dir = TempDir::new();
        dir.file("memory.current", "1048576\n");
        dir.file("memory.peak", "67004416\n");
        dir.file("memory.max", "67108864\n");
        dir.file("memory.events", "low 0\nhigh 0\nmax 31\noom 2\noom_kill 2\noom_group_kill 0\n");
        dir.file("pids.current", "3\n");
        dir.file("pids.max", "max\n");
        dir.file("pids.events", "max 7\n");
        dir.file("cpu.stat", "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n");
        let stats = stats_v2(&dir.0, Reading::All).unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                memory_current: Some(1 << 20),
                memory_peak: Some(67004416),
                memory_limit: Some(64 << 20),
                oom_kills: Some(2),
                pids_current: Some(3),
                pids_peak: None,
                pids_limit: None,
                pids_max_hits: Some(7),
                cpu_usage_usec: Some(1234567),
            }
        );
        assert!(stats.oom_killed());
        assert_eq!(stats.memory_summary(), "limit 64M, peak 63.9M");
        // The verdicts alone: the same kills and refusals, with the limits and peak their messages name.
        let verdicts = stats_v2(&dir.0, Reading::Verdicts).unwrap();
        assert_eq!(
            verdicts,
            CgroupStats {
                memory_peak: Some(67004416),
                memory_limit: Some(64 << 20),
                oom_kills: Some(2),
                pids_max_hits: Some(7),
                ..CgroupStats::default()
            }
        );
        // Nothing to report: nothing but the two counters is read (a file that would not parse goes unread).
        dir.file("memory.events", "oom_kill 0\n");
        dir.file("pids.events", "max 0\n");
        dir.file("memory.peak", "garbage\n");
        dir.file("pids.max", "garbage\n");
        dir.file("cpu.stat", "usage_usec garbage\n");
        let quiet = stats_v2(&dir.0, Reading::Verdicts).unwrap();
        assert_eq!(quiet, CgroupStats { oom_kills: Some(0), pids_max_hits: Some(0), ..CgroupStats::default() });
        assert!(matches!(stats_v2(&dir.0, Reading::All), Err(CgroupError::Parse { .. })));
        dir.file("memory.events", "oom_kill lots\n");
        assert!(matches!(stats_v2(&dir.0, Reading::Verdicts), Err(CgroupError::Parse { .. })));
    }

    // -- v1 ----------------------------------------------------------------------------------------------------

    #[test]
    fn v1_create_writes_exactly_the_limits_in_every_hierarchy() {
        let dir = fake_v1(true);
        let layout = detect_layout(&dir.0).unwrap();
        let own = parse_proc_cgroup("4:memory:/process_api/x\n8:pids:/\n1:cpu:/\n2:cpuacct:/\n0::/\n");
        let cgroup = create_with(&layout, &host(&own, 0), "box", &limits(Some(32 << 20), Some(16), Some(0.5))).unwrap();
        let name = "4026531836-4242-777-box";
        let root = fs::canonicalize(&dir.0).unwrap();
        assert_eq!(
            take_writes(&root),
            pairs(&[
                (&format!("memory/airlock/{name}/memory.oom_control"), "0"),
                (&format!("memory/airlock/{name}/memory.limit_in_bytes"), "33554432"),
                (&format!("memory/airlock/{name}/memory.memsw.limit_in_bytes"), "33554432"),
                (&format!("pids/airlock/{name}/pids.max"), "16"),
                (&format!("cpu/airlock/{name}/cpu.cfs_period_us"), "100000"),
                (&format!("cpu/airlock/{name}/cpu.cfs_quota_us"), "50000"),
            ])
        );
        let expected: Vec<PathBuf> =
            ["memory", "pids", "cpu", "cpuacct"].iter().map(|h| root.join(h).join("airlock").join(name)).collect();
        assert_eq!(cgroup.paths(), expected.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        assert!(expected.iter().all(|p| p.is_dir()));
        cgroup.add_process(99).unwrap();
        let procs: Vec<(String, String)> = ["memory", "pids", "cpu", "cpuacct"]
            .iter()
            .map(|h| (format!("{h}/airlock/{name}/cgroup.procs"), "99".to_string()))
            .collect();
        assert_eq!(take_writes(&root), procs);
    }

    #[test]
    fn v1_limits_only_makes_just_the_hierarchies_of_the_limits_asked() {
        let dir = fake_v1(true);
        let layout = detect_layout(&dir.0).unwrap();
        let own = parse_proc_cgroup("0::/\n");
        let root = fs::canonicalize(&dir.0).unwrap();
        let made = |sandbox: &str, limits: &Limits| {
            let planned = match plan_with(&layout, &host(&own, 0), sandbox, limits, Accounting::LimitsOnly).unwrap() {
                CgroupPlan::Deferred(planned) => planned,
                CgroupPlan::Made(_) => panic!("v1 plans are deferred"),
            };
            let tasks = planned.tasks();
            let cgroup = planned.make().unwrap();
            let hierarchy =
                |p: &Path| p.strip_prefix(&root).unwrap().iter().next().unwrap().to_string_lossy().into_owned();
            let left_out: Vec<String> = cgroup.other_parents.iter().map(|p| hierarchy(p)).collect();
            let hierarchies: Vec<String> = cgroup.paths().into_iter().map(hierarchy).collect();
            assert_eq!(tasks.len(), hierarchies.len());
            // Every usable hierarchy is either ours or swept beside ours.
            let mut all: Vec<&str> = hierarchies.iter().chain(&left_out).map(String::as_str).collect();
            all.sort();
            assert_eq!(all, ["cpu", "cpuacct", "memory", "pids"]);
            take_writes(&root);
            hierarchies
        };
        assert_eq!(made("m", &limits(Some(32 << 20), None, None)), ["memory"]);
        assert_eq!(made("p", &limits(None, Some(16), None)), ["pids"]);
        assert_eq!(made("c", &limits(None, None, Some(0.5))), ["cpu"]);
        // All three: still no cpuacct directory, which only counts.
        assert_eq!(made("all", &limits(Some(32 << 20), Some(16), Some(0.5))), ["memory", "pids", "cpu"]);
        // Full accounting: every hierarchy, as `create` makes them.
        let full = create_with(&layout, &host(&own, 0), "b", &limits(None, Some(16), None)).unwrap();
        assert_eq!(full.paths().len(), 4);
    }

    #[test]
    fn v1_memory_without_swap_accounting_turns_swappiness_off() {
        let dir = fake_v1(false);
        let layout = detect_layout(&dir.0).unwrap();
        let own = parse_proc_cgroup("0::/\n");
        let cgroup = create_with(&layout, &host(&own, 0), "b", &limits(Some(64 << 20), None, None)).unwrap();
        let root = fs::canonicalize(&dir.0).unwrap();
        let d = format!("memory/airlock/{}", cgroup.name());
        assert_eq!(
            take_writes(&root),
            pairs(&[
                (&format!("{d}/memory.oom_control"), "0"),
                (&format!("{d}/memory.limit_in_bytes"), "67108864"),
                (&format!("{d}/memory.swappiness"), "0"),
            ])
        );
    }

    #[test]
    fn v1_raising_memory_writes_memsw_first() {
        let dir = fake_v1(true);
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let memory = &mut f.as_mut().unwrap().hierarchies[0].1;
            for (name, content) in memory.iter_mut() {
                if name.starts_with("memory.") && name.ends_with("limit_in_bytes") {
                    *content = "1048576".to_string();
                }
            }
        });
        let layout = detect_layout(&dir.0).unwrap();
        let own = parse_proc_cgroup("0::/\n");
        let cgroup = create_with(&layout, &host(&own, 0), "b", &limits(Some(8 << 20), None, None)).unwrap();
        let root = fs::canonicalize(&dir.0).unwrap();
        let d = format!("memory/airlock/{}", cgroup.name());
        assert_eq!(
            take_writes(&root),
            pairs(&[
                (&format!("{d}/memory.oom_control"), "0"),
                (&format!("{d}/memory.memsw.limit_in_bytes"), "8388608"),
                (&format!("{d}/memory.limit_in_bytes"), "8388608"),
            ])
        );
    }

    #[test]
    fn v1_missing_hierarchy_fails_only_the_limit_that_needs_it() {
        let dir = TempDir::new();
        dir.file("memory/tasks", "");
        dir.file("memory/cgroup.procs", "");
        let memory = Some(fs::canonicalize(dir.0.join("memory")).unwrap());
        FAKE.with(|f| {
            *f.borrow_mut() = Some(FakeKernel { hierarchies: vec![(memory.clone().unwrap(), v1_memory_files(true))] })
        });
        let layout = CgroupLayout::V1 { memory, pids: None, cpu: None, cpuacct: None };
        let own = parse_proc_cgroup("0::/\n");
        let err = create_with(&layout, &host(&own, 0), "b", &limits(Some(1 << 20), Some(10), None)).unwrap_err();
        assert!(matches!(err, CgroupError::ControllerUnavailable { controller: "pids", .. }), "{err:?}");
        assert!(!dir.0.join("memory/airlock/4026531836-4242-777-b").exists());
        let cgroup = create_with(&layout, &host(&own, 0), "b", &limits(Some(1 << 20), None, None)).unwrap();
        assert_eq!(cgroup.paths().len(), 1);
    }

    #[test]
    fn v1_stats_parse() {
        let dir = TempDir::new();
        dir.file("m/memory.usage_in_bytes", "4096\n");
        dir.file("m/memory.max_usage_in_bytes", "33554432\n");
        dir.file("m/memory.limit_in_bytes", "33554432\n");
        dir.file("m/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n");
        dir.file("p/pids.current", "2\n");
        dir.file("p/pids.peak", "16\n");
        dir.file("p/pids.max", "16\n");
        dir.file("p/pids.events", "max 34\n");
        dir.file("c/cpuacct.usage", "2500000000\n");
        let (m, p, c) = (dir.0.join("m"), dir.0.join("p"), dir.0.join("c"));
        let stats = stats_v1(Some(&m), Some(&p), Some(&c), Reading::All).unwrap();
        assert_eq!(
            stats,
            CgroupStats {
                memory_current: Some(4096),
                memory_peak: Some(32 << 20),
                memory_limit: Some(32 << 20),
                oom_kills: Some(1),
                pids_current: Some(2),
                pids_peak: Some(16),
                pids_limit: Some(16),
                pids_max_hits: Some(34),
                cpu_usage_usec: Some(2_500_000),
            }
        );
        let verdicts = stats_v1(Some(&m), Some(&p), Some(&c), Reading::Verdicts).unwrap();
        assert_eq!(
            verdicts,
            CgroupStats {
                memory_peak: Some(32 << 20),
                memory_limit: Some(32 << 20),
                oom_kills: Some(1),
                pids_limit: Some(16),
                pids_max_hits: Some(34),
                ..CgroupStats::default()
            }
        );
        dir.file("m/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
        dir.file("p/pids.events", "max 0\n");
        dir.file("m/memory.max_usage_in_bytes", "garbage\n");
        dir.file("p/pids.max", "garbage\n");
        dir.file("c/cpuacct.usage", "garbage\n");
        let quiet = stats_v1(Some(&m), Some(&p), Some(&c), Reading::Verdicts).unwrap();
        assert_eq!(quiet, CgroupStats { oom_kills: Some(0), pids_max_hits: Some(0), ..CgroupStats::default() });
        assert!(matches!(stats_v1(Some(&m), Some(&p), Some(&c), Reading::All), Err(CgroupError::Parse { .. })));
        dir.file("m/memory.max_usage_in_bytes", "33554432\n");
        dir.file("p/pids.max", "16\n");
        dir.file("m/memory.limit_in_bytes", UNLIMITED_V1);
        assert_eq!(stats_v1(Some(&m), None, None, Reading::All).unwrap().memory_limit, None);
    }

    // -- names, owners, stale cgroups --------------------------------------------------------------------------

    #[test]
    fn names_record_the_owner() {
        let name = OWNER.cgroup_name("fix-tests.2").unwrap();
        assert_eq!(name, "4026531836-4242-777-fix-tests.2");
        assert_eq!(CgroupOwner::from_cgroup_name(&name), Some((OWNER, "fix-tests.2")));
        for junk in ["cgroup.procs", "1-2-x", "a-1-2-b", "1-2-3-", "1-2-3-a/b", "airlock-supervisor"] {
            assert_eq!(CgroupOwner::from_cgroup_name(junk), None, "{junk}");
        }
        for bad in ["", "a/b", "..", ".x", "-x", "x y", &"n".repeat(129)] {
            assert!(matches!(OWNER.cgroup_name(bad), Err(CgroupError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn owners_are_judged_by_pid_and_start_time() {
        let me = CgroupOwner::current().unwrap();
        assert!(me.may_be_alive(me.pid_namespace));
        assert!(!CgroupOwner { start_time: me.start_time + 1, ..me }.may_be_alive(me.pid_namespace));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = CgroupOwner { pid: child.id(), ..me };
        child.wait().unwrap();
        assert!(!dead.may_be_alive(me.pid_namespace));
        assert!(dead.may_be_alive(me.pid_namespace + 1), "another pid namespace's owner is never judged dead");
    }

    #[test]
    fn stale_cgroups_of_dead_owners_are_removed_and_others_kept() {
        let dir = TempDir::new();
        dir.file("cgroup.controllers", "memory pids");
        dir.file("cgroup.procs", "");
        let me = CgroupOwner::current().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = CgroupOwner { pid: child.id(), ..me };
        child.wait().unwrap();
        let stale = dir.0.join("airlock").join(dead.cgroup_name("old").unwrap());
        let live = dir.0.join("airlock").join(me.cgroup_name("current").unwrap());
        let foreign = dir.0.join("airlock").join("not-ours");
        for d in [&stale, &live, &foreign] {
            fs::create_dir_all(d).unwrap();
        }
        let layout = CgroupLayout::V2 { root: dir.0.clone() };
        let removed = remove_stale_with(&layout, &parse_proc_cgroup("0::/\n"), me.pid_namespace, &[]).unwrap();
        assert_eq!(removed, vec![stale.clone()]);
        assert!(!stale.exists() && live.is_dir() && foreign.is_dir());
    }

    #[test]
    fn the_sweep_beside_ours_looks_where_ours_is_and_where_it_left_out_and_keeps_it() {
        let dir = TempDir::new();
        let me = CgroupOwner::current().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = CgroupOwner { pid: child.id(), ..me };
        child.wait().unwrap();
        let name = me.cgroup_name("current").unwrap();
        let ours_dir = dir.0.join("memory/airlock").join(&name);
        // A stale sandbox that was in two hierarchies: ours is in one, and left the other out (LimitsOnly).
        let stale = dir.0.join("memory/airlock").join(dead.cgroup_name("old").unwrap());
        let stale_elsewhere = dir.0.join("pids/airlock").join(dead.cgroup_name("old").unwrap());
        // A hierarchy neither ours uses nor left out (not usable here) is not this sweep's: the full sweep's.
        let unrelated = dir.0.join("cpu/airlock").join(dead.cgroup_name("older").unwrap());
        for d in [&ours_dir, &stale, &stale_elsewhere, &unrelated] {
            fs::create_dir_all(d).unwrap();
        }
        let ours = SandboxCgroup {
            name,
            dirs: Dirs::V1 { memory: Some(ours_dir.clone()), pids: None, cpu: None, cpuacct: None },
            teardown_on_drop_in: None,
            other_parents: vec![dir.0.join("pids/airlock")],
        };
        let mut removed = remove_stale_cgroups_beside(&ours).unwrap();
        removed.sort();
        assert_eq!(removed, vec![stale.clone(), stale_elsewhere.clone()]);
        assert!(!stale.exists() && !stale_elsewhere.exists() && ours_dir.is_dir() && unrelated.is_dir());
        // Ours alone in its `airlock/`, the other one empty: nothing listed, nothing removed.
        assert_eq!(remove_stale_cgroups_beside(&ours).unwrap(), Vec::<PathBuf>::new());
        assert!(ours_dir.is_dir());
    }

    // -- values ------------------------------------------------------------------------------------------------

    #[test]
    fn cpu_quota_from_cpus() {
        assert_eq!(cpu_quota_usec(0.5).unwrap(), 50_000);
        assert_eq!(cpu_quota_usec(1.5).unwrap(), 150_000);
        assert_eq!(cpu_quota_usec(0.0001).unwrap(), MIN_CPU_QUOTA_USEC);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(cpu_quota_usec(bad), Err(CgroupError::InvalidLimit { .. })), "{bad}");
        }
    }

    #[test]
    fn bytes_are_shown_in_memory_units() {
        assert_eq!(format_bytes(64 << 20), "64M");
        assert_eq!(format_bytes(67004416), "63.9M");
        assert_eq!(format_bytes(3 << 29), "1.5G");
        assert_eq!(format_bytes(512 << 10), "512K");
        assert_eq!(format_bytes(100), "100B");
        assert_eq!(format_bytes((64 << 20) - 1), "64M");
        let none = CgroupStats::default();
        assert_eq!(none.memory_summary(), "");
        assert!(!none.oom_killed());
    }

    #[test]
    fn keyed_files_parse() {
        assert_eq!(parse_keyed("max 3\nmax.imposed 1\n", "max"), Ok(Some(3)));
        assert_eq!(parse_keyed("oom 1\n", "oom_kill"), Ok(None));
        assert_eq!(parse_keyed("oom_kill\n", "oom_kill"), Err(()));
    }

    // -- real cgroup v1 hierarchies (this machine) -------------------------------------------------------------

    mod real_v1 {
        use super::*;
        use std::os::unix::process::ExitStatusExt;
        use std::process::{Child, Command, ExitStatus, Stdio};

        /// This machine's v1 memory, pids and cpu hierarchies as root, or `None` after a printed skip reason.
        /// Under `CI=true` a machine that has the hierarchies must run the test: skipping there fails.
        fn real_v1_layout() -> Option<CgroupLayout> {
            let layout = detect_layout(Path::new(SYS_FS_CGROUP));
            let has_v1 = matches!(&layout, Ok(CgroupLayout::V1 { memory: Some(_), pids: Some(_), cpu: Some(_), .. }));
            if !has_v1 {
                println!("SKIP: no cgroup v1 memory, pids and cpu hierarchies under {SYS_FS_CGROUP} ({layout:?})");
                return None;
            }
            if !crate::host::is_host_root() {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true: this machine has cgroup v1 hierarchies, but the test does not run as root"
                );
                println!("SKIP: the cgroup v1 tests need root (v1 has no delegation)");
                return None;
            }
            layout.ok()
        }

        fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("child {} still running after {timeout:?}", child.id());
                }
                sleep(Duration::from_millis(10));
            }
        }

        /// A shell that waits for a line on stdin before running `script`, so that it can be put into a cgroup
        /// before it does anything.
        fn gated_shell(script: &str) -> Child {
            Command::new("sh")
                .args(["-c", &format!("read x; {script}")])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        }

        fn release(child: &mut Child) {
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        }

        fn read_trimmed(path: impl AsRef<Path>) -> String {
            read(path).trim().to_string()
        }

        /// The cost of each step of a limited run's cgroup work on this machine (docs/benchmarks.md, "Limits"):
        /// `cargo test -p airlock-runtime --lib -- --ignored --nocapture cgroup_step_costs`. Prints medians; asserts
        /// nothing about them (they depend on the machine).
        #[test]
        #[ignore = "a measurement, not a test: run it by name"]
        fn cgroup_step_costs() {
            let Some(CgroupLayout::V1 {
                memory: Some(memory),
                pids: Some(pids),
                cpu: Some(cpu),
                cpuacct: Some(cpuacct),
            }) = real_v1_layout()
            else {
                return;
            };
            const ROUNDS: usize = 200;
            let limits = limits(Some(256 << 20), Some(512), Some(1.0));
            let mut steps: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
            let mut time =
                |step: &'static str, started: Instant| steps.entry(step).or_default().push(started.elapsed());
            for _ in 0..ROUNDS {
                let started = Instant::now();
                let layout = detect_layout(Path::new(SYS_FS_CGROUP)).unwrap();
                time("1 detect_layout", started);
                let started = Instant::now();
                let own = read_own_cgroups().unwrap();
                time("2a read /proc/self/cgroup", started);
                let started = Instant::now();
                let owner = CgroupOwner::current().unwrap();
                time("2b owner (pid namespace, /proc/self/stat)", started);
                let started = Instant::now();
                let CgroupPlan::Deferred(planned) =
                    SandboxCgroup::plan(&layout, "steps", &limits, Accounting::Full).unwrap()
                else {
                    panic!("v1 is planned, not made")
                };
                let planned_tasks = planned.tasks();
                time("2 plan (2a + 2b + 4 access checks x2)", started);
                let started = Instant::now();
                let (cgroup, limits) = planned.make_dirs().unwrap();
                time("3a make_dirs (mkdir x4)", started);
                let started = Instant::now();
                limits.write(&cgroup).unwrap();
                time("3b limits (oom_control, memory, memsw, pids, cpu period and quota)", started);
                let started = Instant::now();
                remove_stale_with(&layout, &own, owner.pid_namespace, &cgroup.paths()).unwrap();
                time("3c stale sweep beside our own cgroup, nothing stale (4 access checks x2, 4 stat)", started);
                // What init does: this thread moves itself into every hierarchy, then (not timed) back out.
                let started = Instant::now();
                for tasks in planned_tasks.iter() {
                    write_value(tasks, "0").unwrap();
                }
                time("3d join (0 into 4 tasks files, as init)", started);
                for (hierarchy, controller) in
                    [(&memory, "memory"), (&pids, "pids"), (&cpu, "cpu"), (&cpuacct, "cpuacct")]
                {
                    let home = hierarchy.join(own_path(&own, Some(controller)).trim_start_matches('/'));
                    write_value(&home.join("tasks"), "0").unwrap();
                }
                let started = Instant::now();
                cgroup.stats().unwrap();
                time("4 stats (9 files)", started);
                let started = Instant::now();
                cgroup.remove().unwrap();
                time("5 remove (rmdir x4)", started);
            }
            for (step, mut samples) in steps {
                samples.sort();
                println!("{step}: median {:?}", samples[ROUNDS / 2]);
            }
        }

        #[test]
        fn limits_are_written_processes_placed_killed_and_nothing_is_left() {
            let Some(layout) = real_v1_layout() else { return };
            let cgroup = SandboxCgroup::create(&layout, "place", &limits(Some(32 << 20), Some(16), Some(0.5))).unwrap();
            let Dirs::V1 { memory: Some(m), pids: Some(p), cpu: Some(c), .. } = cgroup.dirs.clone() else {
                panic!("not all hierarchies: {:?}", cgroup.dirs)
            };
            assert_eq!(read_trimmed(m.join("memory.limit_in_bytes")), "33554432");
            if m.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read_trimmed(m.join("memory.memsw.limit_in_bytes")), "33554432");
            }
            assert!(read(m.join("memory.oom_control")).contains("oom_kill_disable 0"));
            assert_eq!(read_trimmed(p.join("pids.max")), "16");
            assert_eq!(read_trimmed(c.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read_trimmed(c.join("cpu.cfs_quota_us")), "50000");

            let opened = SandboxCgroup::open(&layout, cgroup.name()).unwrap().unwrap();
            assert_eq!(opened.paths(), cgroup.paths());
            drop(opened);
            assert!(cgroup.paths().iter().all(|p| p.is_dir()), "an opened handle never tears down");

            let mut shell = gated_shell("sleep 30 & sleep 30 & wait");
            let pid = shell.id() as i32;
            cgroup.add_process(pid).unwrap();
            let placed = read(format!("/proc/{pid}/cgroup"));
            for controller in ["memory", "pids", "cpu"] {
                let line =
                    placed.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|x| x == controller)));
                assert_eq!(
                    line.and_then(|l| l.splitn(3, ':').nth(2)),
                    Some(format!("/airlock/{}", cgroup.name()).as_str()),
                    "{placed}"
                );
            }
            release(&mut shell);
            let deadline = Instant::now() + Duration::from_secs(5);
            while cgroup.stats().unwrap().pids_current != Some(3) {
                assert!(Instant::now() < deadline, "the shell's two children never showed up: {:?}", cgroup.stats());
                sleep(Duration::from_millis(10));
            }
            println!("placed: {placed:?}; stats with sh + 2 sleeps: {:?}", cgroup.stats().unwrap());

            cgroup.kill_all().unwrap();
            for path in cgroup.paths() {
                assert_eq!(read(path.join("cgroup.procs")), "", "{} not empty", path.display());
            }
            assert_eq!(wait_with_timeout(&mut shell, Duration::from_secs(5)).signal(), Some(libc::SIGKILL));
            // pids.current counts a task until it is reaped: the sleeps' new parent reaps them soon.
            let deadline = Instant::now() + Duration::from_secs(5);
            while cgroup.stats().unwrap().pids_current != Some(0) {
                assert!(Instant::now() < deadline, "tasks left: {:?}", cgroup.stats());
                sleep(Duration::from_millis(10));
            }
            let paths: Vec<PathBuf> = cgroup.paths().into_iter().map(Path::to_path_buf).collect();
            assert!(paths.iter().all(|p| p.is_dir()), "kill_all keeps the cgroup");
            cgroup.remove().unwrap();
            for path in &paths {
                assert!(!path.exists(), "{} left behind", path.display());
            }
        }

        #[test]
        fn a_memory_hog_is_oom_killed_at_the_limit() {
            let Some(layout) = real_v1_layout() else { return };
            let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
            let limit = 32u64 << 20;
            let cgroup = SandboxCgroup::create(&layout, "oom", &limits(Some(limit), None, None)).unwrap();
            let mut hog = gated_shell(&format!("exec {python} -c 'b = bytearray(200 * 1024 * 1024)'"));
            cgroup.add_process(hog.id() as i32).unwrap();
            let started = Instant::now();
            release(&mut hog);
            let status = wait_with_timeout(&mut hog, Duration::from_secs(30));
            let stats = cgroup.stats().unwrap();
            println!(
                "memory hog: {status:?} after {:?}; {stats:?}; message: killed: out of memory ({})",
                started.elapsed(),
                stats.memory_summary()
            );
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
            assert!(stats.oom_kills.unwrap_or(0) >= 1 && stats.oom_killed(), "{stats:?}");
            let peak = stats.memory_peak.unwrap();
            assert!(peak <= limit && peak >= limit / 10 * 9, "peak {peak} not near the limit {limit}");
            assert_eq!(stats.memory_limit, Some(limit));
            cgroup.remove().unwrap();
        }

        #[test]
        fn a_fork_bomb_is_held_at_pids_max() {
            let Some(layout) = real_v1_layout() else { return };
            let cgroup = SandboxCgroup::create(&layout, "forks", &limits(None, Some(16), None)).unwrap();
            let mut bomb = gated_shell("for i in $(seq 50); do sleep 2 & done; wait");
            cgroup.add_process(bomb.id() as i32).unwrap();
            release(&mut bomb);
            let status = wait_with_timeout(&mut bomb, Duration::from_secs(30));
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut bomb.stderr.take().unwrap(), &mut stderr);
            let stats = cgroup.stats().unwrap();
            println!("fork bomb: {status:?}, stderr {:?}; {stats:?}", stderr.lines().next());
            assert!(stats.pids_max_hits.unwrap_or(0) > 0, "{stats:?}");
            assert!(stats.pids_peak.unwrap_or(0) <= 16, "{stats:?}");
            assert_eq!(stats.pids_limit, Some(16));
            let paths: Vec<PathBuf> = cgroup.paths().into_iter().map(Path::to_path_buf).collect();
            cgroup.remove().unwrap();
            assert!(paths.iter().all(|p| !p.exists()));
        }

        #[test]
        fn half_a_cpu_is_half_a_cpu() {
            let Some(layout) = real_v1_layout() else { return };
            let cgroup = SandboxCgroup::create(&layout, "cpu", &limits(None, None, Some(0.5))).unwrap();
            let mut spinner = gated_shell("while :; do :; done");
            cgroup.add_process(spinner.id() as i32).unwrap();
            let before = cgroup.stats().unwrap().cpu_usage_usec.unwrap();
            let started = Instant::now();
            release(&mut spinner);
            sleep(Duration::from_secs(2));
            let used = cgroup.stats().unwrap().cpu_usage_usec.unwrap() - before;
            let ratio = used as f64 / started.elapsed().as_micros() as f64;
            println!("--cpus 0.5: {used} us of CPU in {:?}, ratio {ratio:.3}", started.elapsed());
            cgroup.remove().unwrap();
            let _ = spinner.wait();
            assert!((0.4..=0.6).contains(&ratio), "ratio {ratio}");
        }

        #[test]
        fn without_root_a_limit_fails_closed() {
            let Ok(layout @ CgroupLayout::V1 { .. }) = detect_layout(Path::new(SYS_FS_CGROUP)) else {
                println!("SKIP: no cgroup v1 hierarchies");
                return;
            };
            if crate::host::is_host_root() {
                println!("SKIP: needs a non-root uid (root may write every hierarchy)");
                return;
            }
            let err = SandboxCgroup::create(&layout, "user", &limits(Some(32 << 20), None, None)).unwrap_err();
            println!("{err}");
            assert!(matches!(err, CgroupError::ControllerUnavailable { controller: "memory", .. }), "{err:?}");
        }

        #[test]
        fn stale_cgroups_of_a_dead_owner_are_removed() {
            let Some(layout) = real_v1_layout() else { return };
            // The owner is a child standing in for an airlock killed with SIGKILL: it never tears down.
            let mut owner_process = Command::new("sleep").arg("30").spawn().unwrap();
            let me = CgroupOwner::current().unwrap();
            let start_time = process_start_time(owner_process.id()).unwrap().unwrap();
            let owner = CgroupOwner { pid: owner_process.id(), start_time, ..me };
            let own = read_own_cgroups().unwrap();
            let view = HostView { own: &own, owner, euid: 0 };
            let cgroup = create_with(&layout, &view, "stale", &limits(Some(32 << 20), Some(16), Some(1.0))).unwrap();
            let mut member = Command::new("sleep").arg("30").spawn().unwrap();
            cgroup.add_process(member.id() as i32).unwrap();
            let paths: Vec<PathBuf> = cgroup.paths().into_iter().map(Path::to_path_buf).collect();
            drop(cgroup);
            assert!(paths.iter().all(|p| p.is_dir()), "dropped outside its owner, the cgroup stays");

            let removed = remove_stale_cgroups(&layout).unwrap();
            assert!(paths.iter().all(|p| !removed.contains(p) && p.is_dir()), "removed while the owner lives");

            owner_process.kill().unwrap();
            owner_process.wait().unwrap();
            let removed = remove_stale_cgroups(&layout).unwrap();
            println!("stale cgroups removed: {removed:?}");
            for path in &paths {
                assert!(removed.contains(path) && !path.exists(), "{} not removed", path.display());
            }
            assert_eq!(wait_with_timeout(&mut member, Duration::from_secs(5)).signal(), Some(libc::SIGKILL));
        }
    }

    #[test]
    fn proc_cgroup_v2_only() {
        let entries = parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n");
        assert_eq!(
            entries,
            vec![CgroupEntry {
                hierarchy: 0,
                controllers: vec![],
                path: "/user.slice/user-1000.slice/session-2.scope".to_string(),
            }]
        );
    }

    #[test]
    fn proc_cgroup_hybrid_and_odd_lines() {
        let text = "9:name=systemd:/\n4:memory:/process_api/c47\n2:cpu,cpuacct:/a:b\n\nnot a line\n0::/\n";
        let entries = parse_proc_cgroup(text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].controllers, vec!["name=systemd"]);
        assert_eq!(entries[1].hierarchy, 4);
        assert_eq!(entries[1].path, "/process_api/c47");
        assert_eq!(entries[2].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(entries[2].path, "/a:b", "a ':' in the path is kept");
        assert_eq!(entries[3].hierarchy, 0);
        assert!(entries[3].controllers.is_empty());
    }
}
