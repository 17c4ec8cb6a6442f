//! The prepared plan: everything the sandbox's processes will need after `clone`, built beforehand.
//!
//! After `clone` the sandbox may only do async-signal-safe work, so no allocation: every path is a ready
//! `CString`, every list is sized, every pointer array for `execve` is built here. The plan also keeps display
//! strings so the supervisor can turn a failure record (step, errno, index) into a sentence naming the path.

use std::ffi::{c_char, CString};

use crate::landlock::LandlockPlan;
use crate::seccomp::SeccompProgram;

/// A path inside the sandbox's new root, split into components so that each can be resolved with
/// `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH` relative to the directory before it.
#[derive(Debug, Clone)]
pub struct InsidePath {
    pub components: Vec<CString>,
    /// The absolute path, for messages and Landlock rules.
    pub display: String,
    /// The absolute path as a C string (used after `pivot_root`).
    pub absolute: CString,
}

/// The type a mount source must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Directory,
    RegularFile,
    CharDevice,
}

/// A host path to be bind-mounted. Opened in the sandbox's fresh mount namespace (still a copy of the host's)
/// with `RESOLVE_NO_SYMLINKS`, checked against `kind`, cloned with `open_tree`, before the staging root hides it.
#[derive(Debug, Clone)]
pub struct MountSource {
    pub host_path: CString,
    pub display: String,
    pub kind: SourceKind,
    /// Mount attributes (`MOUNT_ATTR_*`) applied recursively to the clone.
    pub attr_set: u64,
    /// For the `cow` workspace: this source is the lower layer of an overlay whose upper and work directories
    /// are these host paths; the mount placed at the destination is the overlay, not a bind.
    pub overlay: Option<OverlayDirs>,
    /// As host root, a workspace owned by host root: before init opens it, the supervisor mounts an idmapped
    /// clone (with the sandbox's own id maps) over this path and, for `cow`, over each of the layer's directories
    /// (see `rootfs::idmap_over_paths`), so host id N on disk is id N inside and what the sandbox writes is stored
    /// with its inside ids: root inside writes as host root there, and only there.
    pub idmapped: bool,
}

/// The host directories of a copy-on-write layer.
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    /// The directory holding `upper` and `work` (and the checkpoints' `layers/`): what an idmapped workspace's
    /// layer is mounted idmapped as, one mount, since overlayfs wants its upper and work directories on the same
    /// mount.
    pub root: CString,
    pub upper: CString,
    pub work: CString,
    pub upper_display: String,
    /// Checkpoints: read-only layers stacked between the upper directory and the workspace, newest first (at most
    /// [`MAX_FROZEN_LAYERS`]).
    pub frozen: Vec<CString>,
}

/// How many frozen layers (checkpoints) one overlay stacks: init keeps their descriptors in a fixed-size array,
/// because it may not allocate after the clone.
pub const MAX_FROZEN_LAYERS: usize = 32;

/// How many lower layers the root overlay stacks: init keeps their descriptors in a fixed-size array, because
/// it may not allocate after the clone.
pub const MAX_ROOT_LAYERS: usize = 32;

/// `/` as an overlay (`--writable-root`, or `Rootfs::Layers`): its host directories, opened by the supervisor
/// before `clone` (see `rootfs::RootLayerFds`), mounted by init with the sandbox root's credentials.
#[derive(Debug, Clone)]
pub struct RootOverlayPlan {
    /// The lower directories on the host, BOTTOM first (at most [`MAX_ROOT_LAYERS`]).
    pub lowers: Vec<CString>,
    pub lower_displays: Vec<String>,
    /// A kept writable root (a named sandbox's): the host directory holding the overlay's `upper/` and `work/`.
    /// `None`: the upper is a private tmpfs of the sandbox's mount namespace, gone with it — an anonymous run's
    /// writable root (sized as `/tmp` is), or a read-only overlay's (1 MiB: only mount points are made in it,
    /// and the root is made read-only once they are).
    pub layer: Option<CString>,
    pub layer_display: Option<String>,
    /// As host root: the lowers and the layer directory are mounted idmapped with the sandbox's id maps, so the
    /// ids on disk (an image's 0, `_apt`'s 42) are the same ids inside.
    pub idmapped: bool,
    /// `/` is writable (`--writable-root`, an image): in `layer`, or in the private tmpfs.
    pub writable: bool,
    /// The private tmpfs upper's `size` option (`None`: the kernel's default, half the memory).
    pub scratch_size: Option<CString>,
}

/// One step of building the new root, in order.
#[derive(Debug, Clone)]
pub enum RootEntry {
    /// Bind `sources[source]` at `dest`, creating the mount point (a directory, or an empty file for files).
    Bind { source: usize, dest: InsidePath },
    /// A symlink at the top of the new root (merged-/usr layouts: `/bin -> usr/bin`).
    Symlink { name: CString, target: CString, display: String },
    /// An empty tmpfs at `dest`.
    Tmpfs { dest: InsidePath, options: Vec<(CString, CString)>, attr_flags: u64 },
    /// A read-only file of airlock's own at `dest`, over whatever the root had there (`--net allow`'s
    /// `/etc/hosts` and `/etc/resolv.conf`): written into a small private tmpfs (one for all of them, under the
    /// root: `mounts::mount_files_tmpfs`; at most eight), then bound.
    File { dest: InsidePath, contents: Vec<u8> },
}

/// `--net allow`: the sandbox side of the network gateway, a TUN interface init creates in the sandbox's network
/// namespace. Everything is ready for the ioctls: init may not allocate.
#[derive(Debug, Clone)]
pub struct TunPlan {
    /// The interface name, NUL-padded (`IFNAMSIZ`).
    pub name: [u8; libc::IFNAMSIZ],
    /// The sandbox's address and netmask on it, the gateway's address (the default route), network byte order.
    pub address: [u8; 4],
    pub netmask: [u8; 4],
    pub gateway: [u8; 4],
    pub mtu: i32,
}

/// The identities involved and the maps the supervisor writes for the sandbox's user namespace.
#[derive(Debug, Clone)]
pub struct IdPlan {
    /// Whether airlock runs as host root (a 65536-id range is mapped) or rootless (one id is mapped).
    pub host_root: bool,
    /// Ids the sandbox's init switches to once the maps are written (inside values).
    pub init_uid: u32,
    pub init_gid: u32,
    /// The command's ids inside.
    pub uid: u32,
    pub gid: u32,
    /// Init's ids on the host (root inside): the owner the copy-on-write layer's directories must have.
    pub init_host_uid: u32,
    pub init_host_gid: u32,
    /// The command's ids on the host (what its files and processes belong to there).
    pub host_uid: u32,
    pub host_gid: u32,
    /// Contents for `/proc/PID/uid_map` and `gid_map`.
    pub uid_map: String,
    pub gid_map: String,
    /// Rootless with subordinate ids: the maps are written by `newuidmap`/`newgidmap` (see `userns`).
    pub map_tools: Option<crate::userns::SubordinateIds>,
}

/// The command and its environment, ready for `execve`.
#[derive(Debug)]
pub struct CommandPlan {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Candidate paths for `argv[0]`: the `PATH` lookup done up front, tried in order.
    pub candidates: Vec<CString>,
    pub cwd: CString,
    pub display_name: String,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
}

impl CommandPlan {
    pub fn new(
        argv: Vec<CString>,
        envp: Vec<CString>,
        candidates: Vec<CString>,
        cwd: CString,
        display_name: String,
    ) -> Self {
        // The CStrings' heap buffers do not move when the Vecs holding them move, so these pointers stay valid
        // for as long as the plan lives.
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        CommandPlan { argv, envp, candidates, cwd, display_name, argv_ptrs, envp_ptrs }
    }

    /// NULL-terminated argv for `execve`.
    pub fn argv_ptr(&self) -> *const *const c_char {
        self.argv_ptrs.as_ptr()
    }

    /// argv for `execve` (`sys::process::execute`): pointers to the arguments, then NULL.
    pub fn argv_pointers(&self) -> &[*const c_char] {
        &self.argv_ptrs
    }

    /// envp for `execve` (`sys::process::execute`): pointers to the environment's entries, then NULL.
    pub fn envp_pointers(&self) -> &[*const c_char] {
        &self.envp_ptrs
    }
}

impl SandboxPlan {
    /// Whether the sandbox's root writes as host root somewhere (an idmapped workspace): its seccomp filter then
    /// refuses set-ID bits (`policy::seccomp::sandbox_seccomp_profile`).
    pub fn writes_as_host_root(&self) -> bool {
        self.sources.iter().any(|s| s.idmapped)
    }
}

/// Everything the sandbox needs after `clone`.
#[derive(Debug)]
pub struct SandboxPlan {
    pub ids: IdPlan,
    pub sources: Vec<MountSource>,
    /// Indices into `sources` of the host devices bound into `/dev`, with their names there.
    pub devices: Vec<(CString, usize)>,
    pub root_entries: Vec<RootEntry>,
    /// Where the staging root is mounted in the sandbox's copy of the host's mount tree before `pivot_root`.
    pub staging_dir: CString,
    pub hostname: CString,
    pub new_network_namespace: bool,
    pub landlock: Option<LandlockPlan>,
    pub seccomp: SeccompProgram,
    /// The run's execs are recorded from the kernel's exec tracepoints (`exec_tracepoints`), not notified by
    /// `seccomp`.
    pub execs_traced: bool,
    pub command: CommandPlan,
    /// Initial window size for `-t` (the supervisor's terminal's, or 80x24).
    pub tty: Option<libc::winsize>,
    /// Highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub cap_last: u32,
    /// The capabilities the command keeps (bit N is capability N): none, unless root inside keeps the
    /// package-manager set (`policy::sandbox::RootCapabilities`; only when the command's uid is 0).
    pub caps_kept: u64,
    /// cgroup v1 `tasks` files init writes `0` to, joining the sandbox's cgroup itself (see `cgroups`).
    pub cgroup_tasks: Vec<CString>,
    /// The soft/hard limits to set in the command's process (resource, soft, hard).
    pub rlimits: Vec<(u32, u64, u64)>,
    /// A long-lived sandbox (`airlock create`): init runs no command of its own but holds the namespaces until
    /// it is told to stop; commands come later with `airlock exec`.
    pub hold: bool,
    /// `--net allow`: the gateway's interface to create in the sandbox's network namespace.
    pub tun: Option<TunPlan>,
    /// `/` is an overlay rather than a tmpfs holding binds of the rootfs's entries.
    pub root_overlay: Option<RootOverlayPlan>,
}
