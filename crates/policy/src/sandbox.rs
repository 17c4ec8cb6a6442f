//! The resolved sandbox policy: what the runtime builds, after profiles and flags are merged and validated.
//!
//! Every value here is already checked for form (absolute paths, parsed sizes, sane names). Checks that need the
//! host (does the path exist, is it a symlink) belong to the runtime's validation step, which runs before any
//! side effect.

use std::time::Duration;

/// What `/` is inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rootfs {
    /// The host's `/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`, read-only, and nothing else of the host.
    Host,
    /// A directory tree (debootstrap, unpacked image), shown read-only as `/` (or as the lower layer of a
    /// writable root, see `SandboxPolicy::writable_root`).
    Dir(String),
    /// Lower directories of an overlay (an image's unpacked layers), BOTTOM first; in overlayfs form for a mount
    /// made in a user namespace with `userxattr` (whiteout: character device 0/0; opaque directory: xattr
    /// `user.overlay.opaque` = `y`). Read-only, unless `SandboxPolicy::writable_root`.
    Layers(Vec<String>),
}

/// How the workspace is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WorkspaceMode {
    /// Writes land in a layer airlock keeps; the host directory changes only through `airlock commit`.
    Cow,
    /// Writes go straight to the host directory.
    Rw,
    /// Read-only.
    Ro,
}

impl WorkspaceMode {
    /// `cow`, `rw` or `ro`: as `--workspace-mode` takes it and records keep it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceMode::Cow => "cow",
            WorkspaceMode::Rw => "rw",
            WorkspaceMode::Ro => "ro",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Workspace {
    /// Absolute host path; shown at the same path inside and used as the working directory.
    pub path: String,
    pub mode: WorkspaceMode,
}

/// An extra host path shown inside (`--ro-bind`, `--bind`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: String,
    /// Absolute path inside the sandbox.
    pub destination: String,
    pub writable: bool,
}

/// An empty private tmpfs (`--tmpfs DST[:SIZE]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the sandbox.
    pub destination: String,
    /// Size limit in bytes; `None` means the kernel default (half of RAM).
    pub size_bytes: Option<u64>,
}

/// Network mode (`--net`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// A private network namespace with loopback only.
    None,
    /// Only the listed destinations (enforced by the network gateway).
    Allow(Vec<AllowRule>),
    /// The host's network namespace: explicit opt-in, warned.
    Host,
}

/// One `--allow DOMAIN[:PORT]` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllowRule {
    /// Lower-case domain, possibly starting with `*.`.
    pub domain: String,
    /// `None` means the default ports (80 and 443).
    pub port: Option<u16>,
}

/// Identity inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Resource limits. Memory, processes and CPU are enforced by a cgroup; disk bounds the sandbox's tmpfs mounts;
/// `nofile` and `fsize` are rlimits of the command. A limit that cannot be enforced fails the run unless
/// `SandboxPolicy::limits_enforcement` is best-effort.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    pub disk_bytes: Option<u64>,
    /// `RLIMIT_NOFILE`: most open files per process.
    pub nofile: Option<u64>,
    /// `RLIMIT_FSIZE`: largest file the command may write, in bytes.
    pub fsize_bytes: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none()
            && self.pids.is_none()
            && self.cpus.is_none()
            && self.disk_bytes.is_none()
            && self.nofile.is_none()
            && self.fsize_bytes.is_none()
    }

    /// Whether a cgroup is needed (memory, processes or CPU).
    pub fn needs_cgroup(&self) -> bool {
        self.memory_bytes.is_some() || self.pids.is_some() || self.cpus.is_some()
    }
}

/// What the command keeps of the capabilities root has in the sandbox's user namespace. They never reach beyond
/// it: the kernel honours a namespaced capability only on files whose owner and group are mapped into the
/// namespace (the sandbox's own id range), and on the namespace's own objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootCapabilities {
    /// None: root inside can do what any user can.
    None,
    /// What a package manager needs as root: `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `SETUID`, `SETGID`
    /// (to hand files to system users and to drop to them, as apt does for `_apt`) and `KILL` (to stop the
    /// helpers it started as those users). Only when the command runs as uid 0 inside.
    PackageManager,
}

impl RootCapabilities {
    /// `none` or `package-manager`, as the profile and `--root-capabilities` take it.
    pub fn as_str(self) -> &'static str {
        match self {
            RootCapabilities::None => "none",
            RootCapabilities::PackageManager => "package-manager",
        }
    }
}

/// Where a sandbox runs: `--isolation`, the profile's `[security] isolation`, the daemon's `isolation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces, seccomp and Landlock on the host's kernel.
    #[default]
    Namespaces,
    /// A QEMU VM of its own, with that same sandbox inside its kernel.
    Vm,
}

impl Isolation {
    /// The values, as an error message says what is expected.
    pub const EXPECTED: &'static str = "namespaces or vm";

    /// `namespaces` or `vm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Vm => "vm",
        }
    }

    /// The isolation a name stands for, if it is one of [`Isolation::EXPECTED`].
    pub fn from_name(name: &str) -> Option<Isolation> {
        match name {
            "namespaces" => Some(Isolation::Namespaces),
            "vm" => Some(Isolation::Vm),
            _ => None,
        }
    }
}

/// Whether a protection layer must be applied, or may be skipped (with a warning) when the kernel lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Requirement {
    Required,
    BestEffort,
}

/// The whole, validated policy for one sandbox.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxPolicy {
    pub rootfs: Rootfs,
    /// `--writable-root`: `/` is an overlay whose lower layers are the rootfs (a `Dir` or the `Layers`), with an
    /// upper layer the sandbox writes to (ephemeral, or kept with a named sandbox). Never with `Rootfs::Host`.
    pub writable_root: bool,
    pub workspace: Option<Workspace>,
    /// `--ro-bind` and `--bind`, in the order given.
    pub binds: Vec<BindMount>,
    /// `--tmpfs`; `/tmp` and `/dev/shm` are always private and are not listed here.
    pub tmpfs: Vec<TmpfsMount>,
    pub network: Network,
    /// The complete environment of the command, in order. Nothing else of the caller's environment is passed.
    pub env: Vec<(String, String)>,
    pub identity: Identity,
    pub hostname: String,
    pub timeout: Option<Duration>,
    pub limits: Limits,
    /// Whether the cgroup limits must be enforced (`[limits] enforce`); best-effort runs without the ones this
    /// host cannot enforce, saying which.
    pub limits_enforcement: Requirement,
    pub landlock: Requirement,
    /// The capabilities root inside keeps (in the sandbox's user namespace only).
    pub root_capabilities: RootCapabilities,
    /// Working directory inside: the workspace, else `/`.
    pub cwd: String,
    /// argv of the command; `argv[0]` is looked up in the sandbox's `PATH` when it has no `/`.
    pub command: Vec<String>,
}
