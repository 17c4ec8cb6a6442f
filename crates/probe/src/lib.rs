//! What this host lets airlock do, for the user running it: `airlock doctor` prints it, and the run path can read
//! the typed fields to refuse early with a precise reason.
//!
//! Nothing here is guessed from version numbers when it can be tried. One short-lived child process creates a user
//! namespace, maps its own ids, creates the other namespaces inside it, makes every mount private, mounts a tmpfs,
//! an overlay and a fresh `/proc` (from a grandchild that is pid 1 of the new pid namespace), sets `no_new_privs`
//! and installs an allow-everything seccomp filter. It reports one errno per step through a pipe and exits; all it
//! did dies with it. The sysctls and `/proc` files read afterwards only explain a failure and suggest a fix.
//!
//! The probe runs as the current user on purpose: root and an ordinary user get different answers, and the
//! answer that matters is the one for whoever will type `airlock run`.
//!
//! A crate of its own, beside the engine (`runtime`), whose namespaces table, Landlock ABI query, cgroup layout
//! detector and `/proc/PID/cgroup` parser it shares, so that doctor describes what the sandboxes get.

// Every raw system call is `sys`'s.
#![forbid(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use runtime::cgroups::parse_proc_cgroup;
use runtime::namespaces::{self, Kind};
use std::path::{Path, PathBuf};
use sys::mount::{self, EMPTY};

use policy::sandbox::{Limits, Requirement};

/// Where cgroupfs is mounted on every distribution airlock supports.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Available and working for this user.
    Ok,
    /// Works, but with less than airlock can use, or a host setting is weaker than it could be.
    Warn,
    /// Not available for this user; the protection or feature it names cannot be used.
    Missing,
}

impl Status {
    /// The stable lower-case name used in `airlock doctor` output and its JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Missing => "missing",
        }
    }
}

/// One line of `airlock doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable identifier (`userns`, `landlock`, ...), part of the JSON contract.
    pub id: &'static str,
    /// Human name.
    pub name: &'static str,
    pub status: Status,
    /// What was found, including why it failed.
    pub detail: String,
    /// What to do about it; may span several lines.
    pub fix: Option<String>,
}

/// The outcome of one step the probe child tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Worked,
    /// Failed with this errno.
    Failed(i32),
    /// Not tried because an earlier step it depends on failed (or the probe itself could not run).
    NotTried,
}

impl Attempt {
    pub fn worked(self) -> bool {
        self == Attempt::Worked
    }

    /// Short text for a detail line: `ok`, `EPERM (Operation not permitted)`, `not tried`.
    fn describe(self) -> String {
        match self {
            Attempt::Worked => "ok".to_string(),
            Attempt::Failed(errno) => errno_text(errno),
            Attempt::NotTried => "not tried".to_string(),
        }
    }
}

/// Who is running the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    /// Effective uid 0.
    pub root: bool,
}

/// `major.minor.patch` of the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KernelVersion { major, minor, patch }
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// Parsed from `release`, when it starts with `N.N`.
    pub version: Option<KernelVersion>,
}

/// Which namespaces the probe child could create: the user namespace from the host, the others inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub user: Attempt,
    pub mount: Attempt,
    pub pid: Attempt,
    pub net: Attempt,
    pub ipc: Attempt,
    pub uts: Attempt,
    pub cgroup: Attempt,
}

impl Namespaces {
    fn inner(&self) -> [(&'static str, Attempt); 6] {
        [
            (Kind::Pid.name(), self.pid),
            (Kind::Mount.name(), self.mount),
            (Kind::Net.name(), self.net),
            (Kind::Ipc.name(), self.ipc),
            (Kind::Uts.name(), self.uts),
            (Kind::Cgroup.name(), self.cgroup),
        ]
    }

    /// Every namespace `airlock run` clones into can be created.
    pub fn all_work(&self) -> bool {
        self.user.worked() && self.inner().iter().all(|(_, a)| a.worked())
    }
}

/// Which ids can be mapped into a sandbox's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMapping {
    /// CAP_SETUID and CAP_SETGID: any range of the ids this process's own namespace has (`host_ids` of them,
    /// more than one; fewer than [`FULL_ID_RANGE`] in a container that was given a small range).
    FullRange { host_ids: u64 },
    /// Only the invoker's own uid and gid (airlock does not use the setuid `newuidmap` helpers).
    OwnIdsOnly { uid: u32, gid: u32 },
    /// No user namespace, or writing its id maps failed.
    Unavailable,
}

/// Ids a sandbox needs for ordinary distribution tooling (package managers switch to system users).
pub const FULL_ID_RANGE: u64 = 65_536;

/// Whether overlayfs can be mounted in a user namespace (with a tmpfs upper layer), and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayProbe {
    /// `lowerdir=,upperdir=,workdir=`.
    pub plain: Attempt,
    /// Opening a lower file for writing through that mount (a copy-up).
    pub plain_copy_up: Attempt,
    /// The same with the `userxattr` option.
    pub userxattr: Attempt,
    pub userxattr_copy_up: Attempt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlaySupport {
    /// Works without options beyond the layers.
    Plain,
    /// Works only with `userxattr`.
    NeedsUserxattr,
    Unavailable,
}

impl OverlayProbe {
    pub fn support(&self) -> OverlaySupport {
        if self.plain.worked() && self.plain_copy_up.worked() {
            OverlaySupport::Plain
        } else if self.userxattr.worked() && self.userxattr_copy_up.worked() {
            OverlaySupport::NeedsUserxattr
        } else {
            OverlaySupport::Unavailable
        }
    }
}

/// Mounting inside the probe's user and mount namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mounts {
    /// `mount --make-rprivate /`.
    pub private_root: Attempt,
    /// A tmpfs from `fsopen`/`fsmount`, attached with `move_mount`.
    pub tmpfs: Attempt,
    /// A read-only bind: `openat2`, `open_tree(OPEN_TREE_CLONE)`, `mount_setattr(MOUNT_ATTR_RDONLY)`, `move_mount`.
    pub bind_read_only: Attempt,
    /// A fresh procfs, mounted by pid 1 of a new pid namespace.
    pub proc: Attempt,
    pub overlay: OverlayProbe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompSupport {
    /// `prctl(PR_GET_SECCOMP)` for this process: 0 none, 2 filtered; `None` if the kernel has no seccomp.
    pub current_mode: Option<u32>,
    /// Installing a filter (after `no_new_privs`) in the probe child.
    pub filter: Attempt,
    /// `/proc/sys/kernel/seccomp/actions_avail`.
    pub actions: Vec<String>,
}

impl SeccompSupport {
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoNewPrivs {
    /// Already set on this process (inherited).
    pub set_now: bool,
    /// Setting it in the probe child.
    pub settable: Attempt,
}

/// How cgroupfs is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only, mounted at the root.
    V2,
    /// v1 controller hierarchies plus a v2 hierarchy at `unified/`.
    Hybrid,
    /// v1 controller hierarchies only.
    V1,
    /// No cgroupfs found.
    None,
}

impl CgroupLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupLayout::V2 => "v2",
            CgroupLayout::Hybrid => "hybrid",
            CgroupLayout::V1 => "v1",
            CgroupLayout::None => "none",
        }
    }
}

/// This process's cgroup in the v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Cgroup {
    pub dir: PathBuf,
    /// `cgroup.controllers`: what this cgroup may enable for its children.
    pub available: Vec<String>,
    /// `cgroup.subtree_control`: what is enabled for its children now.
    pub subtree_enabled: Vec<String>,
    /// The current user can create child cgroups and move processes here (the directory, `cgroup.procs` and
    /// `cgroup.subtree_control` are writable): the cgroup is delegated, or the user is root.
    pub writable: bool,
}

/// This process's cgroup in one v1 controller hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Cgroup {
    pub controller: &'static str,
    /// `None` when the hierarchy is not mounted or this process has no entry for it.
    pub dir: Option<PathBuf>,
    pub writable: bool,
}

/// The controllers airlock's limits need: `--memory`, `--pids`, `--cpus`.
pub const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupReport {
    pub layout: CgroupLayout,
    pub v2: Option<V2Cgroup>,
    /// One entry per [`LIMIT_CONTROLLERS`] on v1 and hybrid layouts; empty on pure v2.
    pub v1: Vec<V1Cgroup>,
}

impl CgroupReport {
    /// Whether this user can put a sandbox under a limit of this controller.
    pub fn can_limit(&self, controller: &str) -> bool {
        let by_v2 = self.v2.as_ref().is_some_and(|v2| v2.writable && v2.available.iter().any(|c| c == controller));
        let by_v1 = self.v1.iter().any(|h| h.controller == controller && h.dir.is_some() && h.writable);
        by_v2 || by_v1
    }
}

/// Why the probe child could not report at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Cannot create the pipe to the probe child
    #[error("cannot create the pipe to the probe child")]
    Pipe(#[source] io::Error),
    /// Cannot fork the probe child
    #[error("cannot fork the probe child")]
    Fork(#[source] io::Error),
    /// Cannot read the probe child's results
    #[error("cannot read the probe child's results")]
    Read(#[source] io::Error),
    /// Cannot wait for the probe child
    #[error("cannot wait for the probe child")]
    Wait(#[source] io::Error),
    /// The probe child was killed by signal N
    #[error("the probe child was killed by signal {0}")]
    Killed(i32),
}

/// Everything `airlock doctor` reports, as data.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub user: UserInfo,
    pub kernel: KernelInfo,
    pub namespaces: Namespaces,
    pub id_mapping: IdMapping,
    pub mounts: Mounts,
    /// [`runtime::landlock::abi_version`].
    pub landlock_abi: Result<u32, i32>,
    pub seccomp: SeccompSupport,
    pub no_new_privs: NoNewPrivs,
    pub cgroups: CgroupReport,
    /// Set when the probe child could not run or report; the namespace and mount fields are then `NotTried`.
    pub probe_error: Option<String>,
    /// One per item, in display order.
    pub checks: Vec<Check>,
}

/// Check ids whose `Missing` status stops every `airlock run`.
const ALWAYS_REQUIRED: [&str; 7] = ["userns", "idmap", "namespaces", "mounts", "proc", "no_new_privs", "seccomp"];

/// Check ids that cannot pass without a user namespace.
const NEED_USERNS: [&str; 4] = ["idmap", "namespaces", "mounts", "proc"];

impl HostReport {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The checks that stop `airlock run` with a policy needing Landlock as `landlock` and these `limits`.
    /// Empty means the run can be set up.
    pub fn blockers(&self, landlock: Requirement, limits: &Limits) -> Vec<&Check> {
        let cgroups_needed = LIMIT_CONTROLLERS
            .iter()
            .zip([limits.memory_bytes.is_some(), limits.pids.is_some(), limits.cpus.is_some()])
            .any(|(controller, wanted)| wanted && !self.cgroups.can_limit(controller));
        self.checks
            .iter()
            .filter(|c| {
                let required =
                    ALWAYS_REQUIRED.contains(&c.id) || (c.id == "landlock" && landlock == Requirement::Required);
                (required && c.status == Status::Missing) || (c.id == "cgroups" && cgroups_needed)
            })
            .collect()
    }

    /// One sentence: can `airlock run` work here, as this user, and with which protections.
    pub fn summary(&self, landlock: Requirement, limits: &Limits) -> String {
        let who = if self.user.root { "as root".to_string() } else { format!("as uid {}", self.user.uid) };
        let blockers = self.blockers(landlock, limits);
        if !blockers.is_empty() {
            // Without a user namespace the checks that need one fail too; name the cause only.
            let userns_blocked = blockers.iter().any(|c| c.id == "userns");
            let names: Vec<String> = blockers
                .iter()
                .filter(|c| !(userns_blocked && NEED_USERNS.contains(&c.id)))
                .map(|c| format!("{} ({})", c.name, c.id))
                .collect();
            return format!("airlock run cannot work here {who}: blocked by {}", names.join(", "));
        }
        let mut with = vec!["user, pid, mount, net, ipc, uts and cgroup namespaces".to_string()];
        match self.id_mapping {
            IdMapping::FullRange { host_ids } if host_ids >= FULL_ID_RANGE => with.push("a full id range".to_string()),
            IdMapping::FullRange { host_ids } => with.push(format!("{host_ids} ids")),
            _ => with.push("your own ids only".to_string()),
        }
        with.push("a fresh /proc".to_string());
        with.push("seccomp filter".to_string());
        let mut without = Vec::new();
        match self.landlock_abi {
            Ok(abi) => with.push(format!("Landlock ABI v{abi}")),
            Err(_) => without.push("Landlock".to_string()),
        }
        let limitable: Vec<&str> = LIMIT_CONTROLLERS.iter().copied().filter(|c| self.cgroups.can_limit(c)).collect();
        if limitable.len() == LIMIT_CONTROLLERS.len() {
            with.push("memory/pids/cpu limits".to_string());
        } else if limitable.is_empty() {
            without.push("resource limits".to_string());
        } else {
            with.push(format!("{} limits", limitable.join("/")));
            let missing: Vec<&str> = LIMIT_CONTROLLERS.iter().copied().filter(|c| !limitable.contains(c)).collect();
            without.push(format!("{} limits", missing.join("/")));
        }
        if self.mounts.overlay.support() == OverlaySupport::Unavailable {
            without.push("copy-on-write workspaces (overlayfs)".to_string());
        }
        let mut line = format!("airlock run can work here {who}, with {}", with.join(", "));
        if !without.is_empty() {
            line.push_str(&format!("; without {}", without.join(", ")));
        }
        line
    }
}

/// Probe the host for the current user. Never fails: what cannot be determined is reported as such.
///
/// `disk_layer` tries a disk-bounded workspace layer for real (`store::layer::disk::probe`: the workspace store
/// owns that layer, and the runtime cannot depend on it); it is called only as host root.
pub fn probe_host<E: std::fmt::Display>(disk_layer: impl FnOnce() -> Result<(), E>) -> HostReport {
    let user = current_user();
    let kernel = kernel_info();
    let facts = HostFacts::read();

    // Root maps a range only where `airlock run` would (see `runtime::userns::root_mapping`); in a container it
    // may fall back to its own id, or map nothing.
    let root_mapping = user.root.then(runtime::userns::root_mapping);
    let plan = ChildPlan::new(user, root_mapping.as_ref(), &facts);
    let (steps, probe_error) = match run_probe_child(&plan) {
        Ok(steps) => (steps, None),
        Err(err) => ([Attempt::NotTried; step::COUNT], Some(error_chain(&err))),
    };

    let ns = |kind: Kind| steps[step::namespace(kind)];
    let namespaces = Namespaces {
        user: ns(Kind::User),
        mount: ns(Kind::Mount),
        pid: ns(Kind::Pid),
        net: ns(Kind::Net),
        ipc: ns(Kind::Ipc),
        uts: ns(Kind::Uts),
        cgroup: ns(Kind::Cgroup),
    };
    let own_maps_written = [step::SETGROUPS, step::UID_MAP, step::GID_MAP].iter().all(|&s| steps[s].worked());
    let id_mapping = if !namespaces.user.worked() || !own_maps_written {
        IdMapping::Unavailable
    } else if matches!(root_mapping, Some(runtime::userns::RootMapping::OwnIdOnly { .. })) {
        IdMapping::OwnIdsOnly { uid: user.euid, gid: plan.egid }
    } else if let Some(host_ids) =
        facts.own_uid_range.filter(|&n| n > 1 && facts.has_cap(CAP_SETUID) && facts.has_cap(CAP_SETGID))
    {
        IdMapping::FullRange { host_ids }
    } else {
        IdMapping::OwnIdsOnly { uid: user.euid, gid: plan.egid }
    };
    let mounts = Mounts {
        private_root: steps[step::PRIVATE],
        tmpfs: steps[step::TMPFS],
        bind_read_only: steps[step::BIND_RO],
        proc: steps[step::PROC],
        overlay: OverlayProbe {
            plain: steps[step::OVERLAY],
            plain_copy_up: steps[step::OVERLAY_COPYUP],
            userxattr: steps[step::OVERLAY_USERXATTR],
            userxattr_copy_up: steps[step::OVERLAY_USERXATTR_COPYUP],
        },
    };
    let seccomp = SeccompSupport {
        current_mode: current_seccomp_mode(),
        filter: steps[step::SECCOMP_FILTER],
        actions: read_trimmed("/proc/sys/kernel/seccomp/actions_avail")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    };
    let no_new_privs = NoNewPrivs {
        set_now: facts.status_field("NoNewPrivs").is_some_and(|v| v == "1"),
        settable: steps[step::NO_NEW_PRIVS],
    };
    let cgroups = probe_cgroups(Path::new(CGROUP_ROOT), &read_trimmed("/proc/self/cgroup").unwrap_or_default());
    let landlock_abi = runtime::landlock::abi_version();

    let mut report = HostReport {
        user,
        kernel,
        namespaces,
        id_mapping,
        mounts,
        landlock_abi,
        seccomp,
        no_new_privs,
        cgroups,
        probe_error,
        checks: Vec::new(),
    };
    report.checks = vec![
        check_userns(&report, &steps, &facts),
        check_idmap(&report, &steps),
        check_namespaces(&report),
        check_mounts(&report, &steps),
        check_proc(&report),
        check_overlay(&report),
        check_disk_layer(&report, disk_layer),
        check_landlock(&report),
        check_seccomp(&report),
        check_no_new_privs(&report),
        check_cgroups(&report),
        check_ptrace_scope(),
        check_tiocsti(),
        check_bpf(),
        check_tun(),
        check_kernel(&report),
    ];
    report
}

// ---------------------------------------------------------------------------------------------------------------
// The probe child.

/// Step numbers the probe child reports, one errno each.
mod step {
    use runtime::namespaces::{self, Kind};

    /// Creating each namespace: the first steps, one per row of [`namespaces::ALL`], in its order.
    pub const fn namespace(kind: Kind) -> usize {
        kind as usize
    }
    pub const SETGROUPS: usize = 7;
    const _: () = assert!(SETGROUPS == namespaces::ALL.len(), "the namespaces' steps come first");
    pub const UID_MAP: usize = 8;
    pub const GID_MAP: usize = 9;
    pub const PRIVATE: usize = 10;
    pub const TMPFS: usize = 11;
    pub const DIRS: usize = 12;
    pub const OVERLAY: usize = 13;
    pub const OVERLAY_COPYUP: usize = 14;
    pub const OVERLAY_USERXATTR: usize = 15;
    pub const OVERLAY_USERXATTR_COPYUP: usize = 16;
    pub const PROC: usize = 17;
    pub const NO_NEW_PRIVS: usize = 18;
    pub const SECCOMP_FILTER: usize = 19;
    pub const BIND_RO: usize = 20;
    pub const COUNT: usize = 21;
}

type Steps = [Attempt; step::COUNT];

/// What the probe child needs, built before `fork`: the child must not allocate.
struct ChildPlan {
    egid: u32,
    /// `0 <euid> 1`: root inside is the invoker outside, the only mapping any user may write for itself.
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// Root that can map a range but lacks CAP_SETFCAP (a container given CAP_SETUID and CAP_SETGID): a process
    /// may map its own id 0 only with CAP_SETFCAP, so the probe child first becomes the first id of airlock's
    /// ranges (what `airlock run` maps root inside to) and maps that.
    switch_to: Option<u32>,
}

impl ChildPlan {
    fn new(user: UserInfo, root_mapping: Option<&runtime::userns::RootMapping>, facts: &HostFacts) -> ChildPlan {
        let (_, egid) = sys::process::effective_ids();
        let full_range = root_mapping == Some(&runtime::userns::RootMapping::FullRange);
        let switch_to = (full_range && !facts.has_cap(CAP_SETFCAP)).then_some(runtime::userns::HOST_RANGE_BASE);
        let (uid, gid) = switch_to.map_or((user.euid, egid), |id| (id, id));
        ChildPlan {
            egid,
            uid_map: format!("0 {uid} 1\n").into_bytes(),
            gid_map: format!("0 {gid} 1\n").into_bytes(),
            switch_to,
        }
    }
}

// The probe child's scratch tree, on its own tmpfs over /tmp in its private mount namespace.
const SCRATCH: &CStr = c"/tmp";
const SCRATCH_DIRS: [&CStr; 9] = [
    c"/tmp/lower",
    c"/tmp/upper1",
    c"/tmp/work1",
    c"/tmp/merged1",
    c"/tmp/upper2",
    c"/tmp/work2",
    c"/tmp/merged2",
    c"/tmp/bind",
    c"/tmp/proc",
];
const LOWER: &CStr = c"/tmp/lower";
const LOWER_FILE: &CStr = c"/tmp/lower/file";
const OVERLAY_PLAIN_OPTS: &CStr = c"lowerdir=/tmp/lower,upperdir=/tmp/upper1,workdir=/tmp/work1";
const OVERLAY_USERXATTR_OPTS: &CStr = c"lowerdir=/tmp/lower,upperdir=/tmp/upper2,workdir=/tmp/work2,userxattr";

/// Fork the probe child, collect its step results, reap it.
fn run_probe_child(plan: &ChildPlan) -> Result<Steps, ProbeError> {
    let (read_end, write_end) = sys::fd::pipe_cloexec().map_err(|e| ProbeError::Pipe(os_error(e)))?;

    // The child runs only `probe_child`, which makes sys calls on memory prepared before the fork (`plan`,
    // constant C strings, stack buffers), never allocates, takes no lock and does not unwind, and leaves with
    // _exit. That keeps it sound even when the parent has other threads (the test harness), whose locks the child
    // never touches.
    let out = write_end.as_raw_fd();
    let pid = sys::process::fork_and_run(|| probe_child(plan, out)).map_err(|e| ProbeError::Fork(os_error(e)))?;
    // The child holds its own copy; ours must close so the read below ends when the child (and grandchild) exit.
    drop(write_end);

    let mut bytes = Vec::new();
    let read = File::from(read_end).read_to_end(&mut bytes);
    // Reap the child whatever the read did.
    let status = wait_for(pid).map_err(|e| ProbeError::Wait(os_error(e)))?;
    read.map_err(ProbeError::Read)?;
    if libc::WIFSIGNALED(status) {
        return Err(ProbeError::Killed(libc::WTERMSIG(status)));
    }

    let mut steps = [Attempt::NotTried; step::COUNT];
    for record in bytes.chunks_exact(RECORD_LEN) {
        let mut step_bytes = [0u8; 4];
        let mut errno_bytes = [0u8; 4];
        step_bytes.copy_from_slice(&record[..4]);
        errno_bytes.copy_from_slice(&record[4..]);
        let index = u32::from_ne_bytes(step_bytes) as usize;
        let errno = i32::from_ne_bytes(errno_bytes);
        if let Some(slot) = steps.get_mut(index) {
            *slot = if errno == 0 { Attempt::Worked } else { Attempt::Failed(errno) };
        }
    }
    Ok(steps)
}

fn os_error(errno: sys::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// `waitpid` until `pid` (this process's own child, so waiting reaps nothing that belongs to anyone else) has
/// exited, retrying on EINTR. Returns the raw wait status. Async-signal-safe.
fn wait_for(pid: libc::pid_t) -> Result<libc::c_int, sys::Errno> {
    sys::wait::wait_for_exit(pid)
}

/// One record on the pipe: step number and errno (0 = worked), native-endian u32 and i32.
const RECORD_LEN: usize = 8;

/// Writes step results to the pipe. Async-signal-safe: one `write` of a stack buffer per record.
struct Reporter {
    fd: RawFd,
}

impl Reporter {
    /// Report `result` for `step`; returns whether it worked, so steps that depend on it can be skipped.
    fn record(&self, step: usize, result: Result<(), sys::Errno>) -> bool {
        let errno = match result {
            Ok(()) => 0,
            Err(e) => e,
        };
        let mut buf = [0u8; RECORD_LEN];
        buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        // A lost record reads as "not tried" in the parent, which is the honest answer; nothing to do on error.
        let _ = sys::fd::write_all(self.fd, &buf);
        result.is_ok()
    }
}

/// The probe child: try, in `airlock run`'s order and with the same calls, what the sandbox setup needs.
/// Returns its exit status.
fn probe_child(plan: &ChildPlan, out: RawFd) -> i32 {
    let r = Reporter { fd: out };
    if let Some(id) = plan.switch_to {
        // The switch made the child non-dumpable, which gives its /proc files to host root: dumpable again, so
        // that it can write its own maps. A failure shows as the maps failing.
        let _ = sys::credentials::set_thread_ids_raw(id, id)
            .and_then(|()| sys::process::prctl(libc::PR_SET_DUMPABLE, 1).map(drop));
    }
    if r.record(step::namespace(Kind::User), raw::unshare(Kind::User.flag())) {
        probe_inside_userns(plan, &r);
    }
    // Independent of the namespaces: the last two steps before the command's execve.
    let nnp = sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop);
    if r.record(step::NO_NEW_PRIVS, nnp) {
        r.record(step::SECCOMP_FILTER, raw::install_allow_all_filter());
    }
    0
}

fn probe_inside_userns(plan: &ChildPlan, r: &Reporter) {
    // A process may map only its own ids into a namespace it created, and gid_map needs setgroups denied first.
    // Without a mapping, files created below would have no owner and mkdir fails with EOVERFLOW.
    r.record(step::SETGROUPS, raw::write_file(c"/proc/self/setgroups", b"deny"));
    r.record(step::UID_MAP, raw::write_file(c"/proc/self/uid_map", &plan.uid_map));
    r.record(step::GID_MAP, raw::write_file(c"/proc/self/gid_map", &plan.gid_map));

    // The others, inside it, in the table's order.
    let mut created = [false; namespaces::ALL.len()];
    for ns in namespaces::ALL.iter().filter(|ns| ns.kind != Kind::User) {
        created[ns.kind as usize] = r.record(step::namespace(ns.kind), raw::unshare(ns.flag));
    }
    let mount_ns = created[Kind::Mount as usize];
    // The pid namespace takes effect for children only: the proc mount below is done by the first one, pid 1 of
    // the namespace.
    let pid_ns = created[Kind::Pid as usize];
    if !mount_ns {
        return;
    }

    // Before any mount: make every mount of this namespace private, so nothing below propagates to the host.
    // If that fails, no mount is attempted at all.
    if !r.record(step::PRIVATE, raw::make_all_mounts_private()) {
        return;
    }
    // The run path's own calls: a detached tmpfs from fsopen/fsmount, attached with move_mount.
    if !r.record(step::TMPFS, mount_scratch_tmpfs()) {
        return;
    }
    if !r.record(step::DIRS, make_scratch_tree()) {
        return;
    }
    // How the run path shows host directories: openat2 without symlinks, open_tree clone, mount_setattr, move_mount.
    r.record(step::BIND_RO, bind_read_only(LOWER, c"/tmp/bind"));

    let plain = raw::mount(Some(c"overlay"), c"/tmp/merged1", Some(c"overlay"), 0, Some(OVERLAY_PLAIN_OPTS));
    if r.record(step::OVERLAY, plain) {
        r.record(step::OVERLAY_COPYUP, raw::open_for_write(c"/tmp/merged1/file"));
    }
    let userxattr = raw::mount(Some(c"overlay"), c"/tmp/merged2", Some(c"overlay"), 0, Some(OVERLAY_USERXATTR_OPTS));
    if r.record(step::OVERLAY_USERXATTR, userxattr) {
        r.record(step::OVERLAY_USERXATTR_COPYUP, raw::open_for_write(c"/tmp/merged2/file"));
    }

    if pid_ns {
        probe_proc_mount(r);
    }
}

/// A new filesystem of `fstype`, configured with `options`, attached at `target`.
fn mount_new_fs(fstype: &CStr, options: &[(&CStr, &CStr)], attrs: u64, target: &CStr) -> Result<(), sys::Errno> {
    let mnt = mount::new_fs(fstype, options.iter().copied(), attrs)?;
    mount::move_mount(mnt.as_raw_fd(), EMPTY, libc::AT_FDCWD, target, libc::MOVE_MOUNT_F_EMPTY_PATH)
}

fn mount_scratch_tmpfs() -> Result<(), sys::Errno> {
    mount_new_fs(
        c"tmpfs",
        &[(c"size", c"1m"), (c"mode", c"0700")],
        libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        SCRATCH,
    )
}

fn make_scratch_tree() -> Result<(), sys::Errno> {
    for dir in SCRATCH_DIRS {
        raw::mkdir(dir)?;
    }
    raw::create_file(LOWER_FILE)
}

fn bind_read_only(source: &CStr, target: &CStr) -> Result<(), sys::Errno> {
    let dir = sys::fd::openat2(libc::AT_FDCWD, source, libc::O_PATH | libc::O_DIRECTORY, libc::RESOLVE_NO_SYMLINKS)?;
    let tree = mount::open_tree(
        dir.as_raw_fd(),
        EMPTY,
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32,
    );
    drop(dir);
    let tree = tree?;
    mount::mount_setattr(tree.as_raw_fd(), EMPTY, libc::AT_EMPTY_PATH as u32, libc::MOUNT_ATTR_RDONLY, 0)?;
    mount::move_mount(tree.as_raw_fd(), EMPTY, libc::AT_FDCWD, target, libc::MOVE_MOUNT_F_EMPTY_PATH)
}

/// procfs can only be mounted by a process of the pid namespace it shows: fork pid 1 and let it try.
fn probe_proc_mount(r: &Reporter) {
    // The probe child is single-threaded (it was forked and started no thread), and the grandchild only makes
    // async-signal-safe calls before _exit.
    let grandchild = sys::process::fork_and_run(|| {
        let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        r.record(step::PROC, mount_new_fs(c"proc", &[], attrs, c"/tmp/proc"));
        0
    });
    match grandchild {
        Err(errno) => {
            r.record(step::PROC, Err(errno));
        }
        Ok(pid) => {
            // Nothing to learn from its status: it reported through the pipe.
            let _ = wait_for(pid);
        }
    }
}

/// The probe child's system calls, as it makes them: through [`sys`], async-signal-safe (no allocation, no
/// locks), errors returned as the raw errno.
mod raw {
    use std::ffi::CStr;
    use std::os::fd::AsRawFd;

    use sys::Errno;

    pub use sys::mount::mount;
    pub use sys::namespace::unshare;

    /// `mount --make-rprivate /`.
    pub fn make_all_mounts_private() -> Result<(), Errno> {
        sys::mount::make_all_private()
    }

    pub fn mkdir(path: &CStr) -> Result<(), Errno> {
        sys::fd::mkdirat(libc::AT_FDCWD, path, 0o700)
    }

    fn open(path: &CStr, flags: libc::c_int) -> Result<std::os::fd::OwnedFd, Errno> {
        // The mode is read only with O_CREAT.
        sys::fd::openat(libc::AT_FDCWD, path, flags | libc::O_CLOEXEC, 0o600)
    }

    pub fn create_file(path: &CStr) -> Result<(), Errno> {
        open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL).map(drop)
    }

    /// Opening an overlay's lower file for writing copies it up to the upper layer.
    pub fn open_for_write(path: &CStr) -> Result<(), Errno> {
        open(path, libc::O_WRONLY).map(drop)
    }

    /// A /proc/self file that must be written in one `write` (id maps, setgroups).
    pub fn write_file(path: &CStr, data: &[u8]) -> Result<(), Errno> {
        let fd = open(path, libc::O_WRONLY)?;
        match sys::fd::write(fd.as_raw_fd(), data)? {
            n if n == data.len() => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    /// A one-instruction classic BPF program returning SECCOMP_RET_ALLOW: proves filter mode works and changes
    /// nothing. The caller set no_new_privs, so no privilege is needed.
    pub fn install_allow_all_filter() -> Result<(), Errno> {
        let filter = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        }];
        sys::seccomp::install_filter(&filter, 0)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Host facts that explain results.

use runtime::caps::{CAP_SETFCAP, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN};

struct HostFacts {
    /// `/proc/self/status`.
    status: String,
    cap_eff: Option<u64>,
    /// Number of host uids in this process's own user namespace (`/proc/self/uid_map`).
    own_uid_range: Option<u64>,
    /// `/proc/self/uid_map` is not the identity map of the initial namespace: we are in a container.
    nested_userns: bool,
    unprivileged_userns_clone: Option<String>,
    max_user_namespaces: Option<String>,
    apparmor_restrict_userns: Option<String>,
}

impl HostFacts {
    fn read() -> HostFacts {
        let status = read_trimmed("/proc/self/status").unwrap_or_default();
        let cap_eff = status_field(&status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok());
        let uid_map = read_trimmed("/proc/self/uid_map").unwrap_or_default();
        HostFacts {
            cap_eff,
            own_uid_range: mapped_id_count(&uid_map),
            nested_userns: !is_initial_uid_map(&uid_map),
            status,
            unprivileged_userns_clone: read_trimmed("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_trimmed("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict_userns: read_trimmed("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }

    fn status_field(&self, key: &str) -> Option<&str> {
        status_field(&self.status, key)
    }

    fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff.is_some_and(|mask| mask & (1u64 << cap) != 0)
    }

    fn seccomp_filtered(&self) -> bool {
        self.status_field("Seccomp").is_some_and(|v| v == "2")
    }
}

fn current_user() -> UserInfo {
    let (uid, gid) = sys::process::real_ids();
    let euid = sys::process::effective_uid();
    UserInfo { uid, gid, euid, root: euid == 0 }
}

fn kernel_info() -> KernelInfo {
    let release = if let Ok(uts) = sys::uts::uname() {
        let bytes: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default()
    };
    KernelInfo { version: parse_kernel_release(&release), release }
}

/// `prctl(PR_GET_SECCOMP)`: 0 or 2; `None` when the kernel has no seccomp (EINVAL).
fn current_seccomp_mode() -> Option<u32> {
    // PR_GET_SECCOMP only returns this thread's mode. (In strict mode it would kill us, but a strict-mode process
    // could not have opened the files read before this.)
    sys::process::prctl(libc::PR_GET_SECCOMP, 0).ok().and_then(|mode| u32::try_from(mode).ok())
}

/// Whether the current user may write `path` (effective ids, as the kernel would check for an open).
fn is_writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    sys::fd::effective_access(&c_path, libc::W_OK)
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// Checks: turn results into what the user reads.

fn check(id: &'static str, name: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check { id, name, status, detail, fix }
}

/// A failure that only means "the probe could not run", reported on every check that depends on the child.
fn not_probed(report: &HostReport, id: &'static str, name: &'static str) -> Option<Check> {
    report.probe_error.as_ref().map(|err| check(id, name, Status::Missing, format!("could not be probed: {err}"), None))
}

/// (`{,-server}`: airlock-server, next to airlock, runs the OCI runtime's sandboxes itself.)
fn apparmor_fix() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/local/bin/airlock".to_string());
    format!(
        "allow user namespaces for airlock only, with an AppArmor profile /etc/apparmor.d/airlock:\n\
         abi <abi/4.0>,\n\
         include <tunables/global>\n\
         profile airlock {exe}{{,-server}} flags=(unconfined) {{\n  userns,\n}}\n\
         then: sudo apparmor_parser -r /etc/apparmor.d/airlock\n\
         (or, for every program: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
    )
}

fn check_userns(report: &HostReport, steps: &Steps, facts: &HostFacts) -> Check {
    const ID: &str = "userns";
    const NAME: &str = "user namespaces";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    let user = report.user;
    let apparmor_restricts = facts.apparmor_restrict_userns.as_deref() == Some("1") && !user.root;
    match report.namespaces.user {
        Attempt::Worked => {
            // Ubuntu 23.10+ lets the namespace be created but confines it to a profile without capabilities:
            // it only shows when using it fails.
            let denied_later = [steps[step::namespace(Kind::Mount)], steps[step::PRIVATE], steps[step::TMPFS]]
                .iter()
                .any(|a| matches!(a, Attempt::Failed(e) if *e == libc::EPERM || *e == libc::EACCES));
            if apparmor_restricts && denied_later {
                return check(
                    ID,
                    NAME,
                    Status::Missing,
                    "created, but AppArmor (kernel.apparmor_restrict_unprivileged_userns = 1) takes away its \
                     capabilities: mounting inside it is denied"
                        .to_string(),
                    Some(apparmor_fix()),
                );
            }
            let mut detail = format!("created a user namespace as uid {}", user.euid);
            if facts.nested_userns {
                detail.push_str(" (this process is already inside a user namespace, as in a container)");
            }
            check(ID, NAME, Status::Ok, detail, None)
        }
        Attempt::Failed(errno) => {
            let (why, fix) = explain_userns_failure(errno, user, facts);
            check(
                ID,
                NAME,
                Status::Missing,
                format!("unshare(CLONE_NEWUSER) failed: {}; {why}", errno_text(errno)),
                fix,
            )
        }
        Attempt::NotTried => check(ID, NAME, Status::Missing, "not tried".to_string(), None),
    }
}

/// Why creating a user namespace failed, from the knobs that can cause it, and the fix.
fn explain_userns_failure(errno: i32, user: UserInfo, facts: &HostFacts) -> (String, Option<String>) {
    match errno {
        libc::EPERM | libc::EACCES => {
            if !user.root && facts.unprivileged_userns_clone.as_deref() == Some("0") {
                return (
                    "kernel.unprivileged_userns_clone is 0 (the Debian/Ubuntu switch for unprivileged user \
                     namespaces)"
                        .to_string(),
                    Some(
                        "sudo sysctl -w kernel.unprivileged_userns_clone=1, and persist it in \
                         /etc/sysctl.d/99-airlock.conf"
                            .to_string(),
                    ),
                );
            }
            if !user.root && facts.apparmor_restrict_userns.as_deref() == Some("1") {
                return (
                    "AppArmor restricts unprivileged user namespaces \
                     (kernel.apparmor_restrict_unprivileged_userns = 1)"
                        .to_string(),
                    Some(apparmor_fix()),
                );
            }
            if facts.seccomp_filtered() {
                let caps = if facts.has_cap(CAP_SYS_ADMIN) { "" } else { " and without CAP_SYS_ADMIN" };
                return (
                    format!(
                        "this process runs under a seccomp filter (Seccomp: 2 in /proc/self/status){caps}, as in a \
                         container: Docker's and Podman's default profiles refuse unshare with namespace flags"
                    ),
                    Some(SECCOMP_CONTAINER_FIX.to_string()),
                );
            }
            if facts.nested_userns && !facts.has_cap(CAP_SYS_ADMIN) {
                return (
                    "this process is inside a user namespace (a container) without CAP_SYS_ADMIN".to_string(),
                    Some("run airlock outside the container, or give the container user namespaces".to_string()),
                );
            }
            (
                "no known switch explains it: a security module (SELinux, AppArmor) policy, or a chroot, may deny \
                 it"
                .to_string(),
                None,
            )
        }
        libc::ENOSPC | libc::EUSERS => {
            if facts.max_user_namespaces.as_deref() == Some("0") {
                (
                    "user.max_user_namespaces is 0, which disables user namespaces".to_string(),
                    Some(
                        "sudo sysctl -w user.max_user_namespaces=15000, and persist it in \
                         /etc/sysctl.d/99-airlock.conf"
                            .to_string(),
                    ),
                )
            } else {
                let limit = facts.max_user_namespaces.as_deref().unwrap_or("unknown");
                (
                    format!(
                        "the per-user limit user.max_user_namespaces ({limit}) is used up, or user namespaces are \
                         nested 32 deep"
                    ),
                    Some("raise user.max_user_namespaces, or stop what holds the namespaces".to_string()),
                )
            }
        }
        libc::EINVAL => (
            "the kernel is built without CONFIG_USER_NS".to_string(),
            Some("use a kernel with CONFIG_USER_NS=y (every mainstream distribution kernel has it)".to_string()),
        ),
        _ => ("unexpected error".to_string(), None),
    }
}

/// The container fixes `airlock doctor` names (README "Inside containers").
pub const SECCOMP_CONTAINER_FIX: &str = "start the container with airlock's seccomp profile (Docker's default plus \
     the namespace and mount calls airlock needs): docker run --security-opt \
     seccomp=contrib/docker/airlock-seccomp.json (installed as share/airlock/airlock-seccomp.json; runc: its \
     linux.seccomp); or run airlock outside the container";
pub const PROC_CONTAINER_FIX: &str = "start the container with an unmasked /proc: docker run --security-opt \
     systempaths=unconfined (runc: remove the /proc entries of linux.maskedPaths and linux.readonlyPaths); then \
     run the container's processes as a non-root user or inside airlock, since root in the container could write \
     /proc/sys; or run airlock outside the container";
pub const ROOT_CAPS_CONTAINER_FIX: &str = "give the container CAP_SETUID and CAP_SETGID for a full id range \
     (Docker's defaults have them; runc: add them to process.capabilities), or CAP_SETFCAP for root's own id \
     only; or run airlock as a non-root user in the container";

fn check_idmap(report: &HostReport, steps: &Steps) -> Check {
    const ID: &str = "idmap";
    const NAME: &str = "id mapping";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    if !report.namespaces.user.worked() {
        return check(ID, NAME, Status::Missing, "needs a user namespace".to_string(), None);
    }
    match report.id_mapping {
        IdMapping::FullRange { host_ids } if host_ids >= FULL_ID_RANGE => check(
            ID,
            NAME,
            Status::Ok,
            format!(
                "a full range of ids can be mapped (CAP_SETUID and CAP_SETGID; {host_ids} host uids in this \
                 namespace)"
            ),
            None,
        ),
        IdMapping::FullRange { host_ids } => check(
            ID,
            NAME,
            Status::Warn,
            format!("only {host_ids} ids can be mapped: this process's own user namespace (a container) has no more"),
            Some(format!("give the container at least {FULL_ID_RANGE} ids in its uid_map and gid_map")),
        ),
        IdMapping::OwnIdsOnly { uid, gid } => check(
            ID,
            NAME,
            Status::Warn,
            {
                let why = match runtime::userns::root_mapping() {
                    runtime::userns::RootMapping::OwnIdOnly { why } if report.user.root => why,
                    _ => "airlock does not use the setuid newuidmap helper".to_string(),
                };
                format!(
                    "only your own ids map into the sandbox: root inside is uid {uid}/gid {gid} outside, any other \
                     id inside shows as nobody and cannot be switched to ({why})"
                )
            },
            Some(match report.user.root {
                true => ROOT_CAPS_CONTAINER_FIX.to_string(),
                false => "run airlock as root for a full id range (root inside still maps to an unprivileged host \
                          id)"
                .to_string(),
            }),
        ),
        IdMapping::Unavailable => {
            let failed = [
                ("setgroups", steps[step::SETGROUPS]),
                ("uid_map", steps[step::UID_MAP]),
                ("gid_map", steps[step::GID_MAP]),
            ]
            .iter()
            .filter(|(_, a)| !a.worked())
            .map(|(name, a)| format!("writing /proc/self/{name}: {}", a.describe()))
            .collect::<Vec<_>>()
            .join("; ");
            // Root without CAP_SETFCAP (runc's default capabilities) cannot map even its own id 0.
            let fix = report.user.root.then(|| ROOT_CAPS_CONTAINER_FIX.to_string());
            check(ID, NAME, Status::Missing, failed, fix)
        }
    }
}

fn check_namespaces(report: &HostReport) -> Check {
    const ID: &str = "namespaces";
    const NAME: &str = "pid/mount/net/ipc/uts/cgroup namespaces";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    if !report.namespaces.user.worked() {
        return check(ID, NAME, Status::Missing, "need a user namespace".to_string(), None);
    }
    let failed: Vec<String> = report
        .namespaces
        .inner()
        .iter()
        .filter(|(_, a)| !a.worked())
        .map(|(name, a)| format!("{name}: {}", a.describe()))
        .collect();
    if failed.is_empty() {
        check(ID, NAME, Status::Ok, "all six created inside the user namespace".to_string(), None)
    } else {
        check(
            ID,
            NAME,
            Status::Missing,
            format!("cannot create inside the user namespace: {}", failed.join(", ")),
            Some("the kernel lacks these namespaces (CONFIG_PID_NS, CONFIG_NET_NS, ...) or a security module denies them".to_string()),
        )
    }
}

fn check_mounts(report: &HostReport, steps: &Steps) -> Check {
    const ID: &str = "mounts";
    const NAME: &str = "mounting in a user namespace";
    const NEW_KERNEL: &str = "a kernel 5.12 or newer (airlock mounts with fsopen/fsmount, open_tree, move_mount, \
                              openat2 and mount_setattr)";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    let m = report.mounts;
    let missing = |detail: String, fix: Option<&str>| check(ID, NAME, Status::Missing, detail, fix.map(str::to_string));
    if !report.namespaces.mount.worked() {
        return missing("needs a mount namespace".to_string(), None);
    }
    if !m.private_root.worked() {
        return missing(format!("making / private (MS_REC|MS_PRIVATE) failed: {}", m.private_root.describe()), None);
    }
    match m.tmpfs {
        Attempt::Worked => {}
        Attempt::Failed(libc::ENOSYS) => {
            return missing(
                "the kernel lacks the new mount API (fsopen/fsmount, Linux 5.2)".to_string(),
                Some(NEW_KERNEL),
            )
        }
        other => return missing(format!("mounting a tmpfs failed: {}", other.describe()), None),
    }
    if !steps[step::DIRS].worked() {
        return missing(format!("creating files on the tmpfs failed: {}", steps[step::DIRS].describe()), None);
    }
    match m.bind_read_only {
        Attempt::Worked => check(
            ID,
            NAME,
            Status::Ok,
            "made all mounts private, mounted a tmpfs (fsopen, fsmount, move_mount) and a read-only bind \
             (openat2, open_tree, mount_setattr)"
                .to_string(),
            None,
        ),
        Attempt::Failed(libc::ENOSYS) => {
            missing("the kernel lacks openat2 (Linux 5.6) or mount_setattr (5.12)".to_string(), Some(NEW_KERNEL))
        }
        other => missing(format!("a read-only bind mount failed: {}", other.describe()), None),
    }
}

fn check_proc(report: &HostReport) -> Check {
    const ID: &str = "proc";
    const NAME: &str = "fresh /proc";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    match report.mounts.proc {
        Attempt::Worked => check(ID, NAME, Status::Ok, "pid 1 of a new pid namespace mounted procfs".to_string(), None),
        Attempt::Failed(errno) => {
            let why = if errno == libc::EPERM {
                "; the kernel refuses a new procfs when the existing /proc has parts hidden by mounts over them \
                 (as container runtimes do to /proc/kcore, /proc/sys ...)"
            } else {
                ""
            };
            check(
                ID,
                NAME,
                Status::Missing,
                format!("mounting procfs in a new pid namespace failed: {}{why}", errno_text(errno)),
                Some(PROC_CONTAINER_FIX.to_string()),
            )
        }
        Attempt::NotTried => {
            check(ID, NAME, Status::Missing, "not tried: needs a pid namespace and a tmpfs mount".to_string(), None)
        }
    }
}

/// `--disk` for a `cow` workspace: an ext4 image on a loop device (host root only), tried for real.
fn check_disk_layer<E: std::fmt::Display>(report: &HostReport, probe: impl FnOnce() -> Result<(), E>) -> Check {
    const ID: &str = "disk_layer";
    const NAME: &str = "disk-bounded workspace layer (--disk)";
    if !report.user.root {
        return check(
            ID,
            NAME,
            Status::Warn,
            "rootless: --disk with a cow workspace is refused (its layer is a loop-mounted ext4 image, which a user \
             namespace cannot mount); --disk still bounds /tmp and --tmpfs"
                .to_string(),
            None,
        );
    }
    match probe() {
        Ok(()) => check(
            ID,
            NAME,
            Status::Ok,
            "an ext4 image on a loop device mounts: --disk bounds a cow workspace's layer".to_string(),
            None,
        ),
        Err(e) => check(
            ID,
            NAME,
            Status::Warn,
            format!("--disk with a cow workspace will fail: {e}"),
            Some("install e2fsprogs (mkfs.ext4), load the loop and ext4 modules (modprobe loop ext4)".to_string()),
        ),
    }
}

fn check_overlay(report: &HostReport) -> Check {
    const ID: &str = "overlay";
    const NAME: &str = "overlayfs in a user namespace";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    let o = report.mounts.overlay;
    let tried = format!(
        "plain: {}, copy-up {}; userxattr: {}, copy-up {}",
        o.plain.describe(),
        o.plain_copy_up.describe(),
        o.userxattr.describe(),
        o.userxattr_copy_up.describe()
    );
    if !report.mounts.tmpfs.worked() {
        return check(
            ID,
            NAME,
            Status::Warn,
            "not tried: needs mounting in a user namespace; --workspace-mode cow is unavailable".to_string(),
            None,
        );
    }
    match o.support() {
        OverlaySupport::Plain => check(
            ID,
            NAME,
            Status::Ok,
            format!("mounted with a tmpfs upper layer, userxattr not needed ({tried})"),
            None,
        ),
        OverlaySupport::NeedsUserxattr => check(
            ID,
            NAME,
            Status::Ok,
            format!("mounted with a tmpfs upper layer, needs the userxattr option ({tried})"),
            None,
        ),
        OverlaySupport::Unavailable => {
            let old = report.kernel.version.is_some_and(|v| v < KernelVersion::new(5, 11, 0));
            let why = if old { "; kernels before 5.11 cannot mount overlayfs in a user namespace" } else { "" };
            let fix = if old {
                "use --workspace-mode rw or ro, or a kernel 5.11 or newer"
            } else {
                "use --workspace-mode rw or ro"
            };
            check(
                ID,
                NAME,
                Status::Warn,
                format!("cannot mount ({tried}){why}; --workspace-mode cow is unavailable"),
                Some(fix.to_string()),
            )
        }
    }
}

/// What each Landlock ABI version adds.
const LANDLOCK_FEATURES: [(u32, &str); 7] = [
    (1, "filesystem access rules"),
    (2, "refer (rename/link across directories)"),
    (3, "truncate"),
    (4, "TCP bind/connect"),
    (5, "ioctl on devices"),
    (6, "abstract Unix socket and signal scoping"),
    (7, "audit logging"),
];

/// "v1 filesystem access rules, v2 refer ...; not in this kernel: ..." for an ABI version.
pub fn describe_landlock_abi(abi: u32) -> String {
    let have: Vec<String> =
        LANDLOCK_FEATURES.iter().filter(|(v, _)| *v <= abi).map(|(v, f)| format!("v{v} {f}")).collect();
    let lacking: Vec<String> =
        LANDLOCK_FEATURES.iter().filter(|(v, _)| *v > abi).map(|(v, f)| format!("v{v} {f}")).collect();
    let mut text = format!("ABI v{abi}: {}", have.join(", "));
    if !lacking.is_empty() {
        text.push_str(&format!("; not in this kernel: {}", lacking.join(", ")));
    }
    text
}

fn check_landlock(report: &HostReport) -> Check {
    const ID: &str = "landlock";
    const NAME: &str = "Landlock";
    match report.landlock_abi {
        Ok(abi) => check(ID, NAME, Status::Ok, describe_landlock_abi(abi), None),
        Err(libc::ENOSYS) => check(
            ID,
            NAME,
            Status::Missing,
            "the kernel is built without CONFIG_SECURITY_LANDLOCK".to_string(),
            Some("use a kernel 5.13 or newer with CONFIG_SECURITY_LANDLOCK=y".to_string()),
        ),
        Err(libc::EOPNOTSUPP) => {
            let lsm = read_trimmed("/sys/kernel/security/lsm");
            let (current, example) = match &lsm {
                Some(list) => (format!("enabled security modules: {list}"), format!("lsm=landlock,{list}")),
                None => (
                    "/sys/kernel/security/lsm is not readable".to_string(),
                    "lsm=landlock,<the current list>".to_string(),
                ),
            };
            check(
                ID,
                NAME,
                Status::Missing,
                format!("built into the kernel but not enabled ({current})"),
                Some(format!(
                    "add landlock to the lsm= boot parameter ({example}) in GRUB_CMDLINE_LINUX, update-grub, reboot"
                )),
            )
        }
        Err(errno) => {
            check(ID, NAME, Status::Missing, format!("landlock_create_ruleset failed: {}", errno_text(errno)), None)
        }
    }
}

fn check_seccomp(report: &HostReport) -> Check {
    const ID: &str = "seccomp";
    const NAME: &str = "seccomp filter";
    let s = &report.seccomp;
    let current = match s.current_mode {
        None => {
            return check(
                ID,
                NAME,
                Status::Missing,
                "the kernel is built without CONFIG_SECCOMP (PR_GET_SECCOMP fails)".to_string(),
                Some("use a kernel with CONFIG_SECCOMP_FILTER=y".to_string()),
            )
        }
        Some(0) => "this process is not filtered",
        Some(_) => "this process already runs under a filter (filters stack; airlock adds its own)",
    };
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    if !s.filter.worked() {
        return check(
            ID,
            NAME,
            Status::Missing,
            format!("installing a filter failed: {}", s.filter.describe()),
            Some("use a kernel with CONFIG_SECCOMP_FILTER=y".to_string()),
        );
    }
    let wanted = ["errno", "kill_process", "user_notif"];
    // An unreadable actions_avail (masked /proc/sys) proves nothing missing: the filter itself installed.
    let lacking: Vec<&str> =
        if s.actions.is_empty() { Vec::new() } else { wanted.iter().copied().filter(|a| !s.has_action(a)).collect() };
    let actions = if s.actions.is_empty() {
        "actions unknown (/proc/sys/kernel/seccomp/actions_avail unreadable)".to_string()
    } else {
        format!("actions: {}", s.actions.join(" "))
    };
    if lacking.is_empty() {
        check(ID, NAME, Status::Ok, format!("filter mode works; {actions}; {current}"), None)
    } else {
        check(
            ID,
            NAME,
            Status::Warn,
            format!("filter mode works, but lacks {}; {actions}; {current}", lacking.join(", ")),
            Some("user_notif needs Linux 5.0, kill_process 4.14".to_string()),
        )
    }
}

fn check_no_new_privs(report: &HostReport) -> Check {
    const ID: &str = "no_new_privs";
    const NAME: &str = "no_new_privs";
    if let Some(c) = not_probed(report, ID, NAME) {
        return c;
    }
    let now = if report.no_new_privs.set_now { "already set on this process" } else { "not set on this process" };
    match report.no_new_privs.settable {
        Attempt::Worked => check(ID, NAME, Status::Ok, format!("can be set ({now})"), None),
        other => check(
            ID,
            NAME,
            Status::Missing,
            format!("PR_SET_NO_NEW_PRIVS failed: {} ({now})", other.describe()),
            Some("use a kernel 3.5 or newer".to_string()),
        ),
    }
}

fn check_cgroups(report: &HostReport) -> Check {
    const ID: &str = "cgroups";
    const NAME: &str = "cgroups (resource limits)";
    let cg = &report.cgroups;
    let usable: Vec<&str> = LIMIT_CONTROLLERS.iter().copied().filter(|c| cg.can_limit(c)).collect();
    let unusable: Vec<&str> = LIMIT_CONTROLLERS.iter().copied().filter(|c| !cg.can_limit(c)).collect();

    let mut parts = vec![format!("layout {}", cg.layout.as_str())];
    if let Some(v2) = &cg.v2 {
        parts.push(format!(
            "v2 cgroup {} ({}), controllers available: {}, enabled below: {}",
            v2.dir.display(),
            if v2.writable { "writable" } else { "not writable" },
            words_or_none(&v2.available),
            words_or_none(&v2.subtree_enabled),
        ));
    }
    for h in &cg.v1 {
        parts.push(match &h.dir {
            Some(dir) => format!(
                "v1 {} {} ({})",
                h.controller,
                dir.display(),
                if h.writable { "writable" } else { "not writable" }
            ),
            None => format!("v1 {}: not mounted", h.controller),
        });
    }
    let found = parts.join("; ");

    if unusable.is_empty() {
        return check(ID, NAME, Status::Ok, format!("memory, pids and cpu limits can be set; {found}"), None);
    }
    let user = if report.user.root { "root".to_string() } else { format!("uid {}", report.user.uid) };
    let can = if usable.is_empty() {
        "no limits can be set".to_string()
    } else {
        format!("only {} limits can be set", usable.join(", "))
    };
    let detail = format!(
        "{can} as {user} (missing: {}); --memory/--pids/--cpus needing them will fail; {found}",
        unusable.join(", ")
    );
    let fix = match cg.layout {
        CgroupLayout::V2 => {
            let not_delegated = cg.v2.as_ref().is_some_and(|v2| !v2.writable);
            if not_delegated {
                "run airlock in a delegated cgroup: systemd-run --user --scope -p Delegate=yes airlock run ...\n\
                 or delegate for good: /etc/systemd/system/user@.service.d/delegate.conf with\n\
                 [Service]\nDelegate=memory pids cpu\n\
                 then: sudo systemctl daemon-reload, and log in again"
                    .to_string()
            } else {
                "enable the controllers for this cgroup in its parent's cgroup.subtree_control \
                 (echo +memory +pids +cpu > .../cgroup.subtree_control), or with systemd: Delegate=memory pids cpu"
                    .to_string()
            }
        }
        CgroupLayout::Hybrid | CgroupLayout::V1 => {
            "systemd does not delegate cgroup v1 controllers to ordinary users: boot with \
             systemd.unified_cgroup_hierarchy=1 (cgroup v2) and use systemd-run --user --scope -p Delegate=yes, \
             or run airlock as root"
                .to_string()
        }
        CgroupLayout::None => format!("mount cgroup2 on {CGROUP_ROOT}"),
    };
    let status = if cg.layout == CgroupLayout::None { Status::Missing } else { Status::Warn };
    check(ID, NAME, status, detail, Some(fix))
}

fn words_or_none(words: &[String]) -> String {
    if words.is_empty() {
        "none".to_string()
    } else {
        words.join(" ")
    }
}

fn check_ptrace_scope() -> Check {
    const ID: &str = "ptrace_scope";
    const NAME: &str = "Yama ptrace scope";
    let detail = match read_trimmed("/proc/sys/kernel/yama/ptrace_scope").as_deref() {
        None => "Yama is not enabled (information: airlock's pid namespace already hides host processes)".to_string(),
        Some("0") => {
            "0: classic ptrace permissions (information: the sandbox cannot see host processes to trace)".to_string()
        }
        Some("1") => "1: only descendants can be traced (information)".to_string(),
        Some("2") => "2: only CAP_SYS_PTRACE can trace (information)".to_string(),
        Some("3") => "3: no tracing at all; debuggers and strace fail inside the sandbox too (information)".to_string(),
        Some(other) => format!("{other} (information)"),
    };
    check(ID, NAME, Status::Ok, detail, None)
}

/// `/dev/net/tun`, which `--net allow` needs (init opens it inside the sandbox's network namespace). Only a warning
/// when missing: every other mode works without it, and `--net allow` itself fails closed with the same fix.
fn check_tun() -> Check {
    const ID: &str = "tun";
    const NAME: &str = "TUN device (--net allow)";
    use std::os::unix::fs::FileTypeExt;
    let fix = "load the TUN driver: sudo modprobe tun (in a container, pass /dev/net/tun through)".to_string();
    match std::fs::metadata("/dev/net/tun") {
        Ok(m) if m.file_type().is_char_device() && is_writable(Path::new("/dev/net/tun")) => check(
            ID,
            NAME,
            Status::Ok,
            "/dev/net/tun is there and this user may open it: --net allow can give a sandbox its gateway".to_string(),
            None,
        ),
        Ok(m) if m.file_type().is_char_device() => check(
            ID,
            NAME,
            Status::Warn,
            "/dev/net/tun is not open to this user: --net allow fails here (125)".to_string(),
            Some(
                "sudo chmod 0666 /dev/net/tun (the usual mode: creating an interface still needs CAP_NET_ADMIN)".into(),
            ),
        ),
        _ => check(
            ID,
            NAME,
            Status::Warn,
            "/dev/net/tun is missing: --net allow fails here (125)".to_string(),
            Some(fix),
        ),
    }
}

fn check_tiocsti() -> Check {
    const ID: &str = "tiocsti";
    const NAME: &str = "TIOCSTI";
    match read_trimmed("/proc/sys/dev/tty/legacy_tiocsti").as_deref() {
        Some("1") => check(
            ID,
            NAME,
            Status::Warn,
            "dev.tty.legacy_tiocsti is 1: a process holding a terminal can inject input into it (airlock detaches \
             the command from your terminal; 0 is safer)"
                .to_string(),
            Some("sudo sysctl -w dev.tty.legacy_tiocsti=0".to_string()),
        ),
        Some("0") => check(
            ID,
            NAME,
            Status::Ok,
            "dev.tty.legacy_tiocsti is 0: terminal input injection is disabled".to_string(),
            None,
        ),
        _ => check(
            ID,
            NAME,
            Status::Ok,
            "dev.tty.legacy_tiocsti not present (kernel before 6.2; information: airlock detaches the command from \
             your terminal)"
                .to_string(),
            None,
        ),
    }
}

fn check_bpf() -> Check {
    const ID: &str = "unprivileged_bpf";
    const NAME: &str = "unprivileged bpf";
    match read_trimmed("/proc/sys/kernel/unprivileged_bpf_disabled").as_deref() {
        Some("0") => check(
            ID,
            NAME,
            Status::Warn,
            "kernel.unprivileged_bpf_disabled is 0: any user may load BPF programs (airlock's seccomp filter \
             denies bpf inside the sandbox)"
                .to_string(),
            Some("sudo sysctl -w kernel.unprivileged_bpf_disabled=2".to_string()),
        ),
        Some(v) => check(
            ID,
            NAME,
            Status::Ok,
            format!("kernel.unprivileged_bpf_disabled is {v}: disabled for unprivileged users (information)"),
            None,
        ),
        None => {
            check(ID, NAME, Status::Ok, "kernel.unprivileged_bpf_disabled not present (information)".to_string(), None)
        }
    }
}

fn check_kernel(report: &HostReport) -> Check {
    const ID: &str = "kernel";
    const NAME: &str = "kernel";
    let release = &report.kernel.release;
    match report.kernel.version {
        Some(v) if v < KernelVersion::new(5, 11, 0) => check(
            ID,
            NAME,
            Status::Warn,
            format!("Linux {release}: before 5.11 (overlayfs in user namespaces) and 5.13 (Landlock)"),
            Some("a kernel 5.13 or newer gives airlock every layer".to_string()),
        ),
        Some(_) => check(ID, NAME, Status::Ok, format!("Linux {release}"), None),
        None => check(ID, NAME, Status::Warn, format!("Linux {release:?}: version not recognised"), None),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure parsing.

/// `6.18.44-fc-v657` → 6.18.44; `6.1` → 6.1.0; `5.15.0-91-generic` → 5.15.0.
pub fn parse_kernel_release(release: &str) -> Option<KernelVersion> {
    fn leading_number(s: &str) -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
    let mut parts = release.trim().splitn(3, '.');
    let major = leading_number(parts.next()?)?;
    let minor_part = parts.next()?;
    let minor = leading_number(minor_part)?;
    // Only an all-digit minor may be followed by a patch ("6.1-rc2" has none).
    let patch = if minor_part.chars().all(|c| c.is_ascii_digit()) {
        parts.next().and_then(leading_number).unwrap_or(0)
    } else {
        0
    };
    Some(KernelVersion { major, minor, patch })
}

/// Which cgroup layout is mounted under `root` (normally [`CGROUP_ROOT`]).
pub fn detect_cgroup_layout(root: &Path) -> CgroupLayout {
    // The engine's detector (`cgroups::detect_layout`), so `doctor` describes the layout the sandboxes get: the v1
    // limit controllers first, then v2 at the root or at `unified/`. Hybrid: the v1 controllers with a v2
    // hierarchy beside them.
    match runtime::cgroups::detect_layout(root) {
        Ok(runtime::cgroups::CgroupLayout::V2 { .. }) => CgroupLayout::V2,
        Ok(runtime::cgroups::CgroupLayout::V1 { .. }) if root.join("unified").join("cgroup.controllers").is_file() => {
            CgroupLayout::Hybrid
        }
        Ok(runtime::cgroups::CgroupLayout::V1 { .. }) => CgroupLayout::V1,
        Err(_) => CgroupLayout::None,
    }
}

/// `hierarchy_root` + a path from `/proc/self/cgroup`, refusing `..` (a path outside our cgroup namespace).
fn join_cgroup_path(hierarchy_root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if relative.is_empty() { hierarchy_root.to_path_buf() } else { hierarchy_root.join(relative) })
}

fn read_words(path: &Path) -> Vec<String> {
    read_trimmed(path).map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

/// What this process can do with the cgroupfs under `root`, given its `/proc/self/cgroup` text.
pub fn probe_cgroups(root: &Path, proc_self_cgroup: &str) -> CgroupReport {
    let layout = detect_cgroup_layout(root);
    let entries = parse_proc_cgroup(proc_self_cgroup);

    let v2_root = match layout {
        CgroupLayout::V2 if root.join("cgroup.controllers").is_file() => Some(root.to_path_buf()),
        CgroupLayout::V2 | CgroupLayout::Hybrid => Some(root.join("unified")),
        CgroupLayout::V1 | CgroupLayout::None => None,
    };
    let v2 = v2_root.and_then(|hierarchy| {
        let entry = entries.iter().find(|e| e.hierarchy == 0 && e.controllers.is_empty())?;
        let dir = join_cgroup_path(&hierarchy, &entry.path)?;
        let writable = is_writable(&dir)
            && is_writable(&dir.join("cgroup.procs"))
            && is_writable(&dir.join("cgroup.subtree_control"));
        Some(V2Cgroup {
            available: read_words(&dir.join("cgroup.controllers")),
            subtree_enabled: read_words(&dir.join("cgroup.subtree_control")),
            writable,
            dir,
        })
    });

    let v1 = match layout {
        CgroupLayout::V1 | CgroupLayout::Hybrid => LIMIT_CONTROLLERS
            .iter()
            .map(|&controller| {
                let dir = runtime::cgroups::find_v1_hierarchy(root, controller).and_then(|hierarchy| {
                    let entry =
                        entries.iter().find(|e| e.hierarchy != 0 && e.controllers.iter().any(|c| c == controller))?;
                    join_cgroup_path(&hierarchy, &entry.path)
                });
                let writable = dir.as_ref().is_some_and(|d| is_writable(d) && is_writable(&d.join("cgroup.procs")));
                V1Cgroup { controller, dir, writable }
            })
            .collect(),
        CgroupLayout::V2 | CgroupLayout::None => Vec::new(),
    };

    CgroupReport { layout, v2, v1 }
}

/// The value of `Key:` in `/proc/self/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// Total ids mapped in a `uid_map` text (`inside outside count` per line).
fn mapped_id_count(uid_map: &str) -> Option<u64> {
    let counts: Option<Vec<u64>> =
        uid_map.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().nth(2)?.parse().ok()).collect();
    counts.map(|c| c.iter().sum()).filter(|&n| n > 0)
}

/// The initial user namespace maps all 2^32-1 ids onto themselves.
fn is_initial_uid_map(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// `EPERM (Operation not permitted)`.
fn errno_text(errno: i32) -> String {
    let name = sys::errno_name(errno).unwrap_or_default();
    let message = io::Error::from_raw_os_error(errno).to_string();
    // std's text ends in " (os error N)", which the name already says.
    let message = message.split(" (os error").next().unwrap_or_default();
    if name.is_empty() {
        format!("errno {errno} ({message})")
    } else {
        format!("{name} ({message})")
    }
}

/// `error: source: source...`, for a detail line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop: stands in for cgroupfs.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("airlock-probe-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn file(&self, relative: &str, content: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657"), Some(KernelVersion::new(6, 18, 44)));
        assert_eq!(parse_kernel_release("5.15.0-91-generic"), Some(KernelVersion::new(5, 15, 0)));
        assert_eq!(parse_kernel_release("6.1"), Some(KernelVersion::new(6, 1, 0)));
        assert_eq!(parse_kernel_release("6.8.0+\n"), Some(KernelVersion::new(6, 8, 0)));
        assert_eq!(parse_kernel_release("6.10-rc2"), Some(KernelVersion::new(6, 10, 0)));
        assert_eq!(parse_kernel_release("4.19.0-26-amd64"), Some(KernelVersion::new(4, 19, 0)));
        assert_eq!(parse_kernel_release(""), None);
        assert_eq!(parse_kernel_release("linux"), None);
        assert_eq!(parse_kernel_release("6"), None);
        assert!(KernelVersion::new(5, 10, 200) < KernelVersion::new(5, 11, 0));
    }

    #[test]
    fn cgroup_paths_outside_the_namespace_are_refused() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(join_cgroup_path(root, "/"), Some(root.to_path_buf()));
        assert_eq!(join_cgroup_path(root, "/a/b"), Some(root.join("a/b")));
        assert_eq!(join_cgroup_path(root, "/../../x"), None);
    }

    #[test]
    fn layout_v2() {
        let dir = TempDir::new();
        dir.file("cgroup.controllers", "cpuset cpu io memory pids");
        dir.file("user.slice/cgroup.controllers", "memory pids");
        dir.file("user.slice/cgroup.subtree_control", "");
        dir.file("user.slice/cgroup.procs", "");
        assert_eq!(detect_cgroup_layout(&dir.0), CgroupLayout::V2);

        let report = probe_cgroups(&dir.0, "0::/user.slice\n");
        let v2 = report.v2.clone().unwrap();
        assert_eq!(v2.dir, dir.0.join("user.slice"));
        assert_eq!(v2.available, vec!["memory", "pids"]);
        assert!(v2.subtree_enabled.is_empty());
        // The test owns its temp dir, root or not.
        assert!(v2.writable);
        assert!(report.v1.is_empty());
        assert!(report.can_limit("memory"));
        assert!(report.can_limit("pids"));
        assert!(!report.can_limit("cpu"), "cpu is not in cgroup.controllers");
    }

    #[test]
    fn layout_hybrid() {
        let dir = TempDir::new();
        dir.file("unified/cgroup.controllers", "hugetlb");
        dir.file("unified/cgroup.procs", "");
        dir.file("unified/cgroup.subtree_control", "");
        dir.file("memory/tasks", "");
        dir.file("memory/box/tasks", "");
        dir.file("memory/box/cgroup.procs", "");
        dir.file("cpu,cpuacct/tasks", "");
        dir.file("cpu,cpuacct/cgroup.procs", "");
        assert_eq!(detect_cgroup_layout(&dir.0), CgroupLayout::Hybrid);

        let report = probe_cgroups(&dir.0, "4:memory:/box\n2:cpu,cpuacct:/\n0::/\n");
        assert_eq!(report.layout, CgroupLayout::Hybrid);
        assert_eq!(report.v2.as_ref().unwrap().dir, dir.0.join("unified"));
        let by_name = |name: &str| report.v1.iter().find(|h| h.controller == name).unwrap().clone();
        assert_eq!(by_name("memory").dir, Some(dir.0.join("memory/box")));
        assert_eq!(by_name("cpu").dir, Some(dir.0.join("cpu,cpuacct")), "found through the co-mounted dir");
        assert_eq!(by_name("pids").dir, None, "pids hierarchy not mounted");
        assert!(report.can_limit("memory"));
        assert!(report.can_limit("cpu"));
        assert!(!report.can_limit("pids"));
    }

    #[test]
    fn layout_v1_and_none() {
        let dir = TempDir::new();
        assert_eq!(detect_cgroup_layout(&dir.0), CgroupLayout::None);
        assert_eq!(probe_cgroups(&dir.0, "0::/\n").v2, None);

        dir.file("pids/tasks", "");
        dir.file("pids/cgroup.procs", "");
        assert_eq!(detect_cgroup_layout(&dir.0), CgroupLayout::V1);
        let report = probe_cgroups(&dir.0, "3:pids:/\n");
        assert!(report.v2.is_none());
        assert!(report.can_limit("pids"));
        assert!(!report.can_limit("memory"));
    }

    #[test]
    fn status_and_uid_map_parsing() {
        let status = "Name:\tcat\nNoNewPrivs:\t0\nSeccomp:\t2\nCapEff:\t000001fffeffffff\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "CapEff"), Some("000001fffeffffff"));
        assert_eq!(status_field(status, "Missing"), None);

        assert_eq!(mapped_id_count("         0          0 4294967295\n"), Some(4_294_967_295));
        assert_eq!(mapped_id_count("0 1000 1\n1 100000 65536\n"), Some(65_537));
        assert_eq!(mapped_id_count(""), None);
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("0 1000 1\n"));
    }

    #[test]
    fn landlock_descriptions() {
        let v3 = describe_landlock_abi(3);
        assert!(v3.starts_with("ABI v3: v1 filesystem access rules, v2 refer"));
        assert!(v3.contains("not in this kernel: v4 TCP bind/connect"));
        assert!(!describe_landlock_abi(7).contains("not in this kernel"));
    }

    #[test]
    fn errno_texts() {
        assert_eq!(errno_text(libc::EPERM), "EPERM (Operation not permitted)");
        assert!(errno_text(9999).starts_with("errno 9999"));
    }

    fn synthetic_report(statuses: &[(&'static str, Status)]) -> HostReport {
        let all = Attempt::Worked;
        HostReport {
            user: UserInfo { uid: 1000, gid: 1000, euid: 1000, root: false },
            kernel: KernelInfo { release: "6.8.0".to_string(), version: Some(KernelVersion::new(6, 8, 0)) },
            namespaces: Namespaces { user: all, mount: all, pid: all, net: all, ipc: all, uts: all, cgroup: all },
            id_mapping: IdMapping::OwnIdsOnly { uid: 1000, gid: 1000 },
            mounts: Mounts {
                private_root: all,
                tmpfs: all,
                bind_read_only: all,
                proc: all,
                overlay: OverlayProbe { plain: all, plain_copy_up: all, userxattr: all, userxattr_copy_up: all },
            },
            landlock_abi: Ok(4),
            seccomp: SeccompSupport { current_mode: Some(0), filter: all, actions: vec![] },
            no_new_privs: NoNewPrivs { set_now: false, settable: all },
            cgroups: CgroupReport { layout: CgroupLayout::V2, v2: None, v1: vec![] },
            probe_error: None,
            checks: statuses.iter().map(|&(id, status)| check(id, id, status, String::new(), None)).collect(),
        }
    }

    #[test]
    fn blockers_follow_the_policy() {
        let mut report = synthetic_report(&[
            ("userns", Status::Ok),
            ("landlock", Status::Missing),
            ("cgroups", Status::Warn),
            ("overlay", Status::Warn),
        ]);
        report.landlock_abi = Err(libc::ENOSYS);
        let report = report;
        let ids = |landlock, limits: &Limits| -> Vec<&str> {
            report.blockers(landlock, limits).iter().map(|c| c.id).collect()
        };
        assert!(ids(Requirement::BestEffort, &Limits::default()).is_empty());
        assert_eq!(ids(Requirement::Required, &Limits::default()), ["landlock"]);
        let with_memory = Limits { memory_bytes: Some(1 << 30), ..Limits::default() };
        assert_eq!(ids(Requirement::BestEffort, &with_memory), ["cgroups"]);
        let summary = report.summary(Requirement::BestEffort, &Limits::default());
        assert!(summary.starts_with("airlock run can work here as uid 1000"), "{summary}");
        assert!(summary.contains("without Landlock, resource limits"), "{summary}");
    }

    #[test]
    fn summary_names_the_cause_not_its_consequences() {
        let report = synthetic_report(&[
            ("userns", Status::Missing),
            ("idmap", Status::Missing),
            ("namespaces", Status::Missing),
            ("mounts", Status::Missing),
            ("proc", Status::Missing),
        ]);
        assert_eq!(report.blockers(Requirement::BestEffort, &Limits::default()).len(), 5);
        assert_eq!(
            report.summary(Requirement::BestEffort, &Limits::default()),
            "airlock run cannot work here as uid 1000: blocked by userns (userns)"
        );
    }

    /// Runs the real probe and prints it; run as different users to compare:
    /// `runuser -u probeuser -- target/debug/deps/probe-<hash> probe_host_prints --nocapture`.
    #[test]
    fn probe_host_prints() {
        let started = std::time::Instant::now();
        // The disk-bounded layer is the workspace store's (`airlock doctor` tries it); not tried here.
        let report = probe_host(|| Err("not tried by this test"));
        let elapsed = started.elapsed();
        println!("user {:?}, kernel {:?}", report.user, report.kernel);
        for c in &report.checks {
            println!("{:<8}{:<42}{}", c.status.as_str(), c.name, c.detail);
            if let Some(fix) = &c.fix {
                for line in fix.lines() {
                    println!("  fix: {line}");
                }
            }
        }
        println!("{}", report.summary(Requirement::Required, &Limits::default()));
        println!("probed in {elapsed:?}");
        assert_eq!(report.checks.len(), 16);
        assert!(report.probe_error.is_none(), "{:?}", report.probe_error);
    }
}
