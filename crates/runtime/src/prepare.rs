//! Step 1 of the design: validate the whole policy against this host and build the plan, before any side
//! effect. Everything that can be checked here is: paths exist, are not symlinks, have the right type; the
//! kernel has what the policy requires. After this only the sandbox's own setup can fail.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use policy::sandbox::{Network, Requirement, Rootfs, SandboxPolicy, WorkspaceMode};

use crate::enforcement::{EnforcementReport, Notice, Protection, Status};
use crate::landlock::{self, LandlockPlan, LandlockRule, ACCESS_ALL, ACCESS_DEVICE, ACCESS_READ};
use crate::plan::{
    CommandPlan, IdPlan, InsidePath, MountSource, OverlayDirs, RootEntry, RootOverlayPlan, SandboxPlan, SourceKind,
    MAX_FROZEN_LAYERS, MAX_ROOT_LAYERS,
};
use crate::seccomp;
use crate::userns::{self, HostIdRange, HOST_RANGE_BASE, HOST_RANGE_SIZE};

/// Top-level host entries shared by `--rootfs host`, read-only. Whatever is a symlink on the host (merged
/// /usr) is recreated as the same symlink; whatever is missing is skipped.
pub const HOST_ROOTFS_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"];

/// Host devices bound into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Top-level entries of a `--rootfs DIR` that airlock provides itself.
const PROVIDED_ENTRIES: &[&str] = &["proc", "dev", "tmp"];

const RO_ATTRS: u64 = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
const RW_ATTRS: u64 = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{what} {path} does not exist")]
    PathMissing { what: &'static str, path: String },
    #[error("{what} {path} is or passes through a symlink; give the real path")]
    PathIsSymlink { what: &'static str, path: String },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: String },
    #[error("{what} {path} must be a regular file or a directory")]
    UnsupportedFileType { what: &'static str, path: String },
    #[error("cannot open {what} {path}")]
    OpenPath { what: &'static str, path: String, source: std::io::Error },
    #[error("cannot read rootfs directory {path}")]
    ReadRootfs { path: String, source: std::io::Error },
    #[error("{0} contains a NUL byte")]
    NulByte(String),
    #[error(
        "the copy-on-write layer {path} has {count} checkpoints; at most 32 can be stacked (roll back or commit first)"
    )]
    TooManyLayers { path: String, count: usize },
    #[error("--workspace-mode cow needs a layer directory for the sandbox (internal: the caller gave none)")]
    CowNeedsLayer,
    #[error("--net allow needs the network gateway, which this caller did not set up (internal); use --net none (default) or --net host")]
    NetworkAllowNotAvailable,
    #[error("network gateway: {0}; load the TUN driver (`modprobe tun`; in a container, pass /dev/net/tun through), or use --net none or --net host")]
    TunDeviceMissing(String),
    #[error("network gateway: the interface settings are unusable (name {0:?})")]
    GatewayInterface(String),
    #[error("Landlock is required by the profile but {0}; run `airlock doctor`, or set `[security] landlock = \"best-effort\"` in a profile")]
    LandlockUnavailable(String),
    #[error("user id {0} is outside the sandbox's id range (0-65535)")]
    IdOutOfRange(u32),
    #[error("user namespace: {0}; give the container CAP_SETUID and CAP_SETGID (a full id range: `docker run --cap-add SETUID --cap-add SETGID`, runc's process.capabilities) or CAP_SETFCAP (root's own id only), or run airlock as a non-root user")]
    RootCannotMapIds(String),
    #[error("cannot allocate a host id range")]
    IdRange(#[from] userns::UsernsError),
    #[error("cannot build the seccomp filter: {0}")]
    Seccomp(String),
    #[error("writable shares {first} and {second} belong to different host users; the sandbox can write as only one of them")]
    WritableOwnersDiffer { first: String, second: String },
    #[error("{flag} {asked} is more than this host has ({available}); use at most {available}")]
    LimitAboveHost { flag: &'static str, asked: String, available: String },
    #[error(
        "{name} {asked} is above the current hard limit {hard} (raising it needs CAP_SYS_RESOURCE); use at most {hard}"
    )]
    RlimitAboveHard { name: &'static str, asked: u64, hard: u64 },
    #[error("the staging directory /tmp on the host is not a directory")]
    StagingDir,
    #[error("the root has {count} layers; at most {max} can be stacked")]
    TooManyRootLayers { count: usize, max: usize },
    #[error("--net allow needs {file} in the read-only rootfs {rootfs} (the sandbox's own is bound over it), but {reason}; use --writable-root, or add the file to the tree")]
    RootfsLacksNameFile { rootfs: String, file: String, reason: String },
}

/// The plan plus what must live as long as the sandbox on the supervisor's side.
pub struct Prepared {
    pub plan: SandboxPlan,
    /// Held while the sandbox runs (as host root).
    pub id_range: Option<HostIdRange>,
    /// What the sandbox gets: each protection enforced, best-effort and missing, or not asked for; its
    /// warnings are printed before the run.
    pub enforcement: EnforcementReport,
    /// Display strings for failure messages, by root entry index.
    pub entry_names: Vec<String>,
}

/// Options that are not policy: how airlock itself runs.
#[derive(Debug, Clone, Default)]
pub struct HostContext {
    /// Directory for the id-range locks (as host root).
    pub lock_dir: PathBuf,
    /// `-t`: the window size to start with.
    pub tty: Option<libc::winsize>,
    /// The sandbox's name (`--name`), for its cgroup.
    pub name: Option<String>,
    /// The copy-on-write layer's directories, for a `cow` workspace (created by the caller).
    pub layer: Option<LayerDirs>,
    /// `airlock create`: init holds the sandbox instead of running the command (see `SandboxPlan::hold`).
    pub hold: bool,
    /// `--net allow`: how to start the network gateway (`airlock run` and `create`; `exec` joins the running
    /// sandbox's network and starts none).
    pub gateway: Option<crate::gateway::GatewaySetup>,
    /// A kept writable root (`--writable-root` with a named sandbox): the host directory holding its overlay's
    /// `upper/` and `work/` (created by the caller, in the sandbox's directory). `None` for an anonymous run,
    /// whose writable root is a private tmpfs.
    pub root_layer: Option<PathBuf>,
    /// `exec`, the exec agent, a files visit: joining a running sandbox, whose user namespace's maps hold. No
    /// host id range is claimed (its lock file would outlive the execve, which runs no destructor).
    pub joining: bool,
    /// `airlock create`: the sandbox's state on the host. Removed while the sandbox runs (`rm -rf` of its
    /// directory), nothing could find or stop the sandbox any more, so the supervisor stops it (see
    /// `supervisor::StateWatch`).
    pub watch_state: Option<WatchedState>,
    /// In an `--isolation vm` guest (airlock's guest agent runs the engine): nothing is idmapped here (virtio-9p
    /// cannot be). Without [`HostContext::vm_id_base`] (a rootless host, whose QEMU writes the host's files as
    /// its own user whatever the guest's ids), a root overlay keeps the guest's ids and a writable share owned by
    /// guest root (other than with `--rootfs host`) is written as root.
    pub in_vm_guest: bool,
    /// In a guest whose host airlock is root and whose root is not the host's: the first id of the host id range
    /// the host holds for the sandbox (the root overlay's layers arrive idmapped into it). The sandbox's ids are
    /// mapped onto it as on a host, and guest root owns nothing shared.
    pub vm_id_base: Option<u32>,
    /// Whether the sandbox's resource numbers have a reader (see [`crate::cgroups::Accounting`]): `LimitsOnly`
    /// makes, on cgroup v1, only the limits' cgroups, and reads only what the run's outcome needs.
    pub cgroup_accounting: crate::cgroups::Accounting,
}

/// What a held sandbox's supervisor watches: `dir` (gone, or replaced by another directory) and `record` (gone).
#[derive(Debug, Clone)]
pub struct WatchedState {
    pub dir: PathBuf,
    pub record: PathBuf,
}

/// Upper and work directories of a workspace layer, on the host.
#[derive(Debug, Clone)]
pub struct LayerDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Checkpoints: frozen layers stacked under `upper`, newest first.
    pub frozen: Vec<PathBuf>,
}

fn cstring(s: &str) -> Result<CString, PrepareError> {
    CString::new(s).map_err(|_| PrepareError::NulByte(s.escape_debug().to_string()))
}

fn path_cstring(path: &Path) -> Result<CString, PrepareError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| PrepareError::NulByte(path.display().to_string()))
}

fn inside_path(path: &str) -> Result<InsidePath, PrepareError> {
    let components = path.split('/').filter(|c| !c.is_empty()).map(cstring).collect::<Result<Vec<_>, _>>()?;
    Ok(InsidePath { components, display: path.to_string(), absolute: cstring(path)? })
}

/// Opens `path` with `RESOLVE_NO_SYMLINKS` and returns its file type: proof that no component is a symlink.
fn check_host_path(what: &'static str, path: &str) -> Result<fs::FileType, PrepareError> {
    let c = cstring(path)?;
    match sys::fd::openat2(libc::AT_FDCWD, &c, libc::O_PATH, libc::RESOLVE_NO_SYMLINKS) {
        Ok(fd) => {
            drop(fd);
            fs::symlink_metadata(path).map(|m| m.file_type()).map_err(|source| PrepareError::OpenPath {
                what,
                path: path.to_string(),
                source,
            })
        }
        Err(libc::ENOENT) => Err(PrepareError::PathMissing { what, path: path.to_string() }),
        Err(libc::ELOOP) => Err(PrepareError::PathIsSymlink { what, path: path.to_string() }),
        Err(e) => {
            Err(PrepareError::OpenPath { what, path: path.to_string(), source: std::io::Error::from_raw_os_error(e) })
        }
    }
}

fn source_kind(what: &'static str, path: &str, ft: fs::FileType) -> Result<SourceKind, PrepareError> {
    if ft.is_dir() {
        Ok(SourceKind::Directory)
    } else if ft.is_file() {
        Ok(SourceKind::RegularFile)
    } else if ft.is_char_device() {
        Ok(SourceKind::CharDevice)
    } else {
        Err(PrepareError::UnsupportedFileType { what, path: path.to_string() })
    }
}

struct Builder {
    sources: Vec<MountSource>,
    entries: Vec<RootEntry>,
}

impl Builder {
    fn bind(&mut self, host: &str, dest: &str, kind: SourceKind, attr_set: u64) -> Result<(), PrepareError> {
        self.sources.push(MountSource {
            host_path: cstring(host)?,
            display: host.to_string(),
            kind,
            attr_set,
            overlay: None,
            idmapped: false,
        });
        self.entries.push(RootEntry::Bind { source: self.sources.len() - 1, dest: inside_path(dest)? });
        Ok(())
    }

    fn symlink(&mut self, name: &str, target: &Path) -> Result<(), PrepareError> {
        let target_str = target.to_string_lossy().to_string();
        self.entries.push(RootEntry::Symlink {
            name: cstring(name)?,
            target: CString::new(target.as_os_str().as_bytes())
                .map_err(|_| PrepareError::NulByte(target_str.clone()))?,
            display: format!("/{name} -> {target_str}"),
        });
        Ok(())
    }

    fn tmpfs(
        &mut self,
        dest: &str,
        mode: &str,
        size: Option<u64>,
        ids: Option<(u32, u32)>,
    ) -> Result<(), PrepareError> {
        let mut options = vec![(cstring("mode")?, cstring(mode)?)];
        if let Some(bytes) = size {
            options.push((cstring("size")?, cstring(&bytes.to_string())?));
        }
        if let Some((uid, gid)) = ids {
            options.push((cstring("uid")?, cstring(&uid.to_string())?));
            options.push((cstring("gid")?, cstring(&gid.to_string())?));
        }
        self.entries.push(RootEntry::Tmpfs { dest: inside_path(dest)?, options, attr_flags: RW_ATTRS });
        Ok(())
    }

    fn file(&mut self, dest: &str, contents: &[u8]) -> Result<(), PrepareError> {
        self.entries.push(RootEntry::File { dest: inside_path(dest)?, contents: contents.to_vec() });
        Ok(())
    }
}

/// Step 1: validate `policy` against this host and build the plan.
pub fn prepare_sandbox(policy: &SandboxPolicy, host: &HostContext) -> Result<Prepared, PrepareError> {
    let mut enforcement = EnforcementReport::default();

    // Features not built yet fail closed: a run never silently gets less than it asked for.
    let cow_layer = match &policy.workspace {
        Some(w) if w.mode == WorkspaceMode::Cow => Some(host.layer.as_ref().ok_or(PrepareError::CowNeedsLayer)?),
        _ => None,
    };
    check_limits_against_host(&policy.limits)?;

    let landlock = match (landlock::abi_version(), policy.landlock) {
        (Ok(abi), _) => Some(abi),
        (Err(errno), Requirement::Required) => return Err(PrepareError::LandlockUnavailable(landlock_reason(errno))),
        (Err(errno), Requirement::BestEffort) => {
            let reason = landlock_reason(errno);
            enforcement.set(Protection::Landlock, Status::BestEffortMissing { reason });
            None
        }
    };

    // Identities.
    let (euid, egid) = sys::process::effective_ids();
    // Root maps a range of its own to the sandbox only when it can (on a host; in a container it needs
    // CAP_SETUID, CAP_SETGID and the ids): otherwise it is treated as rootless, its own id only, and said so.
    let host_root = match euid {
        0 => match userns::root_mapping() {
            userns::RootMapping::FullRange => true,
            userns::RootMapping::OwnIdOnly { why } => {
                enforcement.notices.push(Notice::SingleIdMap { missing: why });
                false
            }
            userns::RootMapping::Nothing { why } => return Err(PrepareError::RootCannotMapIds(why)),
        },
        _ => false,
    };
    let (uid, gid) = (policy.identity.uid, policy.identity.gid);
    let mut b = Builder { sources: Vec::new(), entries: Vec::new() };
    // Writable shares and their host owners: as host root, the sandbox's identity becomes that owner.
    let mut writable_owners: Vec<(String, u32, u32)> = Vec::new();
    // A writable root is the sandbox's to change, like /tmp: Landlock leaves it to the mounts (read-only binds,
    // the masked /proc) to say what is not writable.
    let root_access = if policy.writable_root { ACCESS_ALL } else { ACCESS_READ };
    let mut landlock_rules = vec![LandlockRule { path: cstring("/")?, access: root_access }];

    // An overlay root: the rootfs directory or layers are its lowers (checked here), mounted by init; the rest
    // of the root's entries (mount points) are made in it.
    let root_overlay = root_overlay_plan(policy, host, host_root)?;

    // The root filesystem's parts come first: later mounts may land inside them.
    match (&policy.rootfs, &root_overlay) {
        // The overlay is the root (`Layers` always get one: see `root_overlay_plan`).
        (_, Some(_)) | (Rootfs::Layers(_), None) => {}
        (Rootfs::Host, None) => {
            for name in HOST_ROOTFS_ENTRIES {
                let host_path = format!("/{name}");
                match fs::symlink_metadata(&host_path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let target = fs::read_link(&host_path).map_err(|source| PrepareError::OpenPath {
                            what: "rootfs entry",
                            path: host_path.clone(),
                            source,
                        })?;
                        b.symlink(name, &target)?;
                    }
                    Ok(m) if m.is_dir() => {
                        check_host_path("rootfs entry", &host_path)?;
                        b.bind(&host_path, &host_path, SourceKind::Directory, RO_ATTRS)?;
                    }
                    _ => {}
                }
            }
        }
        (Rootfs::Dir(dir), None) => {
            let ft = check_host_path("rootfs", dir)?;
            if !ft.is_dir() {
                return Err(PrepareError::NotADirectory { what: "rootfs", path: dir.clone() });
            }
            let mut entries: Vec<_> = fs::read_dir(dir)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|source| PrepareError::ReadRootfs { path: dir.clone(), source })?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name().to_string_lossy().to_string();
                if PROVIDED_ENTRIES.contains(&name.as_str()) || name.contains('\0') {
                    continue;
                }
                let host_path = format!("{}/{name}", dir.trim_end_matches('/'));
                let ft = entry.file_type().map_err(|source| PrepareError::ReadRootfs { path: dir.clone(), source })?;
                if ft.is_symlink() {
                    let target = fs::read_link(entry.path())
                        .map_err(|source| PrepareError::ReadRootfs { path: dir.clone(), source })?;
                    b.symlink(&name, &target)?;
                } else if ft.is_dir() {
                    b.bind(&host_path, &format!("/{name}"), SourceKind::Directory, RO_ATTRS)?;
                } else if ft.is_file() {
                    b.bind(&host_path, &format!("/{name}"), SourceKind::RegularFile, RO_ATTRS)?;
                }
            }
        }
    }

    // The private /tmp, then the policy's mounts, shallowest first so a mount inside another lands on top of it.
    // --disk bounds what the sandbox can write to memory-backed scratch space: /tmp and every --tmpfs without a
    // size of its own (the copy-on-write layer will be bounded by it too). The writer gets ENOSPC.
    let disk = policy.limits.disk_bytes;
    b.tmpfs("/tmp", "1777", disk, None)?;
    landlock_rules.push(LandlockRule { path: cstring("/tmp")?, access: ACCESS_ALL });

    enum Extra<'a> {
        Bind { source: &'a str, dest: &'a str, writable: bool, what: &'static str, cow: bool },
        Tmpfs { dest: &'a str, size: Option<u64> },
    }
    let mut extras: Vec<Extra> = Vec::new();
    if let Some(ws) = &policy.workspace {
        extras.push(Extra::Bind {
            source: &ws.path,
            dest: &ws.path,
            writable: ws.mode == WorkspaceMode::Rw,
            what: "workspace",
            cow: ws.mode == WorkspaceMode::Cow,
        });
    }
    for bind in &policy.binds {
        extras.push(Extra::Bind {
            source: &bind.source,
            dest: &bind.destination,
            writable: bind.writable,
            what: if bind.writable { "--bind source" } else { "--ro-bind source" },
            cow: false,
        });
    }
    for t in &policy.tmpfs {
        extras.push(Extra::Tmpfs { dest: &t.destination, size: t.size_bytes });
    }
    let depth = |e: &Extra| match e {
        Extra::Bind { dest, .. } | Extra::Tmpfs { dest, .. } => dest.split('/').filter(|c| !c.is_empty()).count(),
    };
    extras.sort_by_key(depth);
    for extra in extras {
        match extra {
            Extra::Bind { source, dest, writable, what, cow } => {
                let ft = check_host_path(what, source)?;
                let kind = source_kind(what, source, ft)?;
                if what == "workspace" && kind != SourceKind::Directory {
                    return Err(PrepareError::NotADirectory { what, path: source.to_string() });
                }
                if kind == SourceKind::CharDevice {
                    return Err(PrepareError::UnsupportedFileType { what, path: source.to_string() });
                }
                b.bind(source, dest, kind, if writable || cow { RW_ATTRS } else { RO_ATTRS })?;
                if let (true, Some(layer)) = (cow, cow_layer) {
                    // The workspace is the lower layer of an overlay; the sandbox writes to the upper layer only.
                    if layer.frozen.len() > MAX_FROZEN_LAYERS {
                        return Err(PrepareError::TooManyLayers {
                            path: layer.upper.display().to_string(),
                            count: layer.frozen.len(),
                        });
                    }
                    let frozen = layer.frozen.iter().map(|p| path_cstring(p)).collect::<Result<Vec<_>, _>>()?;
                    if let Some(last) = b.sources.last_mut() {
                        last.overlay = Some(OverlayDirs {
                            root: path_cstring(layer.upper.parent().unwrap_or(Path::new("/")))?,
                            upper: path_cstring(&layer.upper)?,
                            work: path_cstring(&layer.work)?,
                            upper_display: layer.upper.display().to_string(),
                            frozen,
                        });
                    }
                    landlock_rules.push(LandlockRule { path: cstring(dest)?, access: ACCESS_ALL });
                }
                // A cow workspace counts as writable for the identity mapping: the sandbox changes the workspace's
                // files (in its layer), so it must be their owner.
                if writable || cow {
                    let meta = fs::metadata(source).map_err(|e| PrepareError::OpenPath {
                        what,
                        path: source.to_string(),
                        source: e,
                    })?;
                    // A workspace owned by host root, as host root: no identity mapping can make root inside
                    // its owner (host id 0 is never in the sandbox's range), so it is mounted idmapped instead
                    // (see `MountSource::idmapped`). Only the workspace: a root-owned `--bind` keeps the notice.
                    let root_workspace = host_root && what == "workspace" && meta.uid() == 0 && !host.in_vm_guest;
                    // The layer's directories are mounted idmapped too: their filesystem must take it as well.
                    let idmappable = |layer: Option<&LayerDirs>| -> Result<bool, PrepareError> {
                        let upper = match layer {
                            Some(l) if cow => Some(l.upper.display().to_string()),
                            _ => None,
                        };
                        Ok(supports_idmapped_mounts(what, source)?
                            && upper.map_or(Ok(true), |u| supports_idmapped_mounts("copy-on-write layer", &u))?)
                    };
                    match (root_workspace, root_workspace && idmappable(cow_layer)?) {
                        (true, true) => {
                            if let Some(last) = b.sources.last_mut() {
                                last.idmapped = true;
                            }
                        }
                        (true, false) => enforcement
                            .notices
                            .push(Notice::RootOwnedWorkspaceWithoutIdmap { path: source.to_string() }),
                        (false, _) => writable_owners.push((source.to_string(), meta.uid(), meta.gid())),
                    }
                }
                if writable {
                    landlock_rules.push(LandlockRule { path: cstring(dest)?, access: ACCESS_ALL });
                }
            }
            Extra::Tmpfs { dest, size } => {
                b.tmpfs(dest, "0755", size.or(disk), Some((uid, gid)))?;
                landlock_rules.push(LandlockRule { path: cstring(dest)?, access: ACCESS_ALL });
            }
        }
    }

    // `--net allow`: the gateway's interface, and the sandbox's own name service files over the root's (last, so
    // they land on top of the /etc bind): nothing of the host's /etc/hosts is visible, and names resolve only
    // through the gateway.
    let tun = match (&policy.network, &host.gateway) {
        (Network::Allow(_), Some(setup)) => {
            match check_host_path("device", "/dev/net/tun") {
                Ok(ft) if ft.is_char_device() => {}
                Ok(_) => return Err(PrepareError::TunDeviceMissing("/dev/net/tun is not a character device".into())),
                Err(e) => return Err(PrepareError::TunDeviceMissing(e.to_string())),
            }
            for (dest, contents) in &setup.files {
                if let (Rootfs::Dir(dir), None) = (&policy.rootfs, &root_overlay) {
                    check_name_file(dir, dest)?;
                }
                b.file(dest, contents)?;
            }
            Some(setup.interface.plan().ok_or_else(|| PrepareError::GatewayInterface(setup.interface.name.clone()))?)
        }
        // `--net none`: the root's resolv.conf (the host's, with its nameservers) would send a program that fails
        // to resolve looking for a network problem. One that says why is bound over it, where it fits without
        // changing anything kept: a regular file to cover, or a read-only overlay root (its upper layer is a
        // private tmpfs). A writable root is the sandbox's own (a package manager may manage the file, and a
        // mount point would stay in its layer), and a symlink in a read-only tree cannot be covered: there the
        // root's file stays. This is a note, never a reason to refuse a run.
        (Network::None, _) => {
            let fits = match (&policy.rootfs, &root_overlay) {
                (_, Some(_)) => !policy.writable_root,
                (Rootfs::Host, None) => check_host_path("file", RESOLV_CONF).is_ok_and(|ft| ft.is_file()),
                (Rootfs::Dir(dir), None) => check_name_file(dir, RESOLV_CONF).is_ok(),
                (Rootfs::Layers(_), None) => false,
            };
            if fits {
                b.file(RESOLV_CONF, NET_NONE_RESOLV_CONF.as_bytes())?;
            }
            None
        }
        _ => None,
    };

    let mut devices = Vec::new();
    for name in DEVICES {
        let host_path = format!("/dev/{name}");
        let ft = check_host_path("device", &host_path)?;
        if !ft.is_char_device() {
            return Err(PrepareError::UnsupportedFileType { what: "device", path: host_path });
        }
        b.sources.push(MountSource {
            host_path: cstring(&host_path)?,
            display: host_path.clone(),
            kind: SourceKind::CharDevice,
            attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
            overlay: None,
            idmapped: false,
        });
        devices.push((cstring(name)?, b.sources.len() - 1));
        landlock_rules.push(LandlockRule { path: cstring(&host_path)?, access: ACCESS_DEVICE });
    }
    landlock_rules.push(LandlockRule { path: cstring("/dev/pts")?, access: ACCESS_DEVICE });
    landlock_rules.push(LandlockRule { path: cstring("/dev/shm")?, access: ACCESS_ALL });

    let (ids, id_range) = if host.in_vm_guest && host_root && root_overlay.is_some() && host.vm_id_base.is_none() {
        (guest_identity_ids((uid, gid)), None)
    } else {
        // In a guest, a share owned by root may be written as root (guest root, which the VM bounds) only when
        // the host's system directories are not shared too: their root-only files (`/etc/shadow`) would be the
        // sandbox's to read, as their owner, where on a host root inside is never their owner. With
        // `--rootfs host`, a root-owned share gets what it gets on a host that cannot idmap it (the notice).
        // With a host id range (a root host's VM), the ids are a host's: guest root is no one's owner.
        let guest_root_owner = host.in_vm_guest && host.vm_id_base.is_none() && !matches!(policy.rootfs, Rootfs::Host);
        id_plan(
            host_root,
            policy.writable_root,
            (euid, egid),
            (uid, gid),
            (&writable_owners, guest_root_owner),
            host,
            &mut enforcement,
        )?
    };

    match fs::symlink_metadata("/tmp") {
        Ok(m) if m.is_dir() => {}
        _ => return Err(PrepareError::StagingDir),
    }

    // The seccomp program, once the sources are known: a sandbox whose root writes as host root (an idmapped
    // workspace) may set no set-ID bit (see `seccomp/set-id.toml`).
    let guard_set_id = b.sources.iter().any(|s| s.idmapped);
    let seccomp_profile =
        policy::seccomp::sandbox_seccomp_profile(guard_set_id).map_err(|e| PrepareError::Seccomp(e.to_string()))?;
    let seccomp =
        seccomp::compile_seccomp_program(&seccomp_profile).map_err(|e| PrepareError::Seccomp(e.to_string()))?;

    let command = command_plan(policy)?;
    let entry_names = b
        .entries
        .iter()
        .map(|e| match e {
            RootEntry::Bind { dest, .. } | RootEntry::Tmpfs { dest, .. } | RootEntry::File { dest, .. } => {
                dest.display.clone()
            }
            RootEntry::Symlink { display, .. } => display.clone(),
        })
        .collect();

    let plan = SandboxPlan {
        ids,
        sources: b.sources,
        devices,
        root_entries: b.entries,
        staging_dir: cstring("/tmp")?,
        hostname: cstring(&policy.hostname)?,
        new_network_namespace: !matches!(policy.network, Network::Host),
        landlock: landlock.map(|abi| LandlockPlan { abi, rules: landlock_rules }),
        seccomp,
        execs_traced: false,
        command,
        tty: host.tty,
        cap_last: read_cap_last(),
        caps_kept: match policy.root_capabilities {
            policy::sandbox::RootCapabilities::PackageManager if policy.identity.uid == 0 => {
                crate::caps::PACKAGE_MANAGER
            }
            _ => 0,
        },
        cgroup_tasks: Vec::new(),
        rlimits: rlimits(&policy.limits)?,
        hold: host.hold,
        tun,
        root_overlay,
    };
    record_enforced(&mut enforcement, policy, &plan);
    Ok(Prepared { plan, id_range, enforcement, entry_names })
}

/// The root overlay's plan: for a writable root (over a `Dir` or `Layers`) and for read-only `Layers`; `None`
/// for the host's directories and a read-only `Dir` (binds of its entries, as ever). Every lower must be a real
/// directory (no symlink on the way).
fn root_overlay_plan(
    policy: &SandboxPolicy,
    host: &HostContext,
    host_root: bool,
) -> Result<Option<RootOverlayPlan>, PrepareError> {
    let lowers: Vec<&String> = match (&policy.rootfs, policy.writable_root) {
        (Rootfs::Dir(dir), true) => vec![dir],
        (Rootfs::Layers(layers), _) => layers.iter().collect(),
        _ => return Ok(None),
    };
    if lowers.len() > MAX_ROOT_LAYERS {
        return Err(PrepareError::TooManyRootLayers { count: lowers.len(), max: MAX_ROOT_LAYERS });
    }
    for lower in &lowers {
        if !check_host_path("rootfs layer", lower)?.is_dir() {
            return Err(PrepareError::NotADirectory { what: "rootfs layer", path: lower.to_string() });
        }
    }
    // A kept layer for a named sandbox; an anonymous run's writes stay in a private tmpfs (no host directory to
    // make, sync or remove, and nothing left by a run that was killed), bounded as `/tmp` is.
    let layer = host.root_layer.as_ref().filter(|_| policy.writable_root);
    let scratch_size = match (policy.writable_root, policy.limits.disk_bytes) {
        (false, _) => Some(cstring("1m")?),
        (true, Some(bytes)) => Some(cstring(&bytes.to_string())?),
        (true, None) => None,
    };
    if let Some(dir) = layer {
        let display = dir.display().to_string();
        if !check_host_path("root layer", &display)?.is_dir() {
            return Err(PrepareError::NotADirectory { what: "root layer", path: display });
        }
    }
    Ok(Some(RootOverlayPlan {
        lowers: lowers.iter().map(|l| cstring(l)).collect::<Result<_, _>>()?,
        lower_displays: lowers.iter().map(|l| l.to_string()).collect(),
        layer: layer.map(|dir| path_cstring(dir)).transpose()?,
        layer_display: layer.map(|dir| dir.display().to_string()),
        // In a VM guest the layers are 9p shares, which cannot be idmapped; the guest maps ids one to one
        // instead (see `id_plan`).
        idmapped: host_root && !host.in_vm_guest,
        writable: policy.writable_root,
        scratch_size,
    }))
}

/// Filesystems known to take `MOUNT_ATTR_IDMAP` (the kernel's `FS_ALLOW_IDMAP`): ext2/3/4, xfs, btrfs, tmpfs,
/// f2fs, fat. Checked before the plan is made, so a workspace elsewhere (overlayfs, NFS, FUSE) runs as before,
/// with the notice, instead of failing when the supervisor mounts it.
const IDMAP_FILESYSTEMS: &[libc::c_long] = &[
    libc::EXT4_SUPER_MAGIC,
    libc::XFS_SUPER_MAGIC,
    libc::BTRFS_SUPER_MAGIC,
    libc::TMPFS_MAGIC,
    libc::F2FS_SUPER_MAGIC,
    libc::MSDOS_SUPER_MAGIC,
];

/// Whether the filesystem holding `path` is one of [`IDMAP_FILESYSTEMS`].
fn supports_idmapped_mounts(what: &'static str, path: &str) -> Result<bool, PrepareError> {
    let open_error = |errno| PrepareError::OpenPath {
        what,
        path: path.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
    };
    let fd = sys::fd::openat2(libc::AT_FDCWD, &cstring(path)?, libc::O_PATH, libc::RESOLVE_NO_SYMLINKS)
        .map_err(open_error)?;
    let sfs = sys::fd::fstatfs(fd.as_raw_fd()).map_err(open_error)?;
    // `f_type` is a `long` in glibc but an `unsigned long` in musl; the magic numbers all fit either.
    #[allow(clippy::unnecessary_cast)]
    let f_type = sfs.f_type as libc::c_long;
    Ok(IDMAP_FILESYSTEMS.contains(&f_type))
}
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The sandbox's `/etc/resolv.conf` under `--net none`: no nameserver (resolvers then try loopback, where nothing
/// answers, and fail at once), and a comment for whoever looks.
pub const NET_NONE_RESOLV_CONF: &str = "# airlock: --net none: no network by policy; see --net allow / --allow\n";

/// A read-only `--rootfs DIR` with `--net allow`: airlock's `/etc/hosts` and `/etc/resolv.conf` are bound over
/// the tree's, so the tree must have them as regular files (nothing can be created in it). Refused here, with
/// the way out, rather than when the bind fails (or, worse, skipped: the gateway's name service needs them).
fn check_name_file(rootfs: &str, dest: &str) -> Result<(), PrepareError> {
    let path = format!("{}{dest}", rootfs.trim_end_matches('/'));
    let reason = match check_host_path("file", &path) {
        Ok(ft) if ft.is_file() => return Ok(()),
        Ok(_) => "it is not a regular file".to_string(),
        Err(PrepareError::PathMissing { .. }) => "the tree has none".to_string(),
        Err(PrepareError::PathIsSymlink { .. }) => "it is (or passes through) a symlink".to_string(),
        Err(e) => e.to_string(),
    };
    Err(PrepareError::RootfsLacksNameFile { rootfs: rootfs.to_string(), file: dest.to_string(), reason })
}

/// Fills in the report from the plan: what the plan does is what the sandbox gets (every step of it either
/// succeeds or fails the run). Gaps recorded earlier (a best-effort Landlock) stay.
fn record_enforced(report: &mut EnforcementReport, policy: &SandboxPolicy, plan: &SandboxPlan) {
    let applies = |yes: bool| if yes { Status::Enforced } else { Status::NotRequested };
    for protection in [Protection::Namespaces, Protection::PivotRoot, Protection::Capabilities, Protection::NoNewPrivs]
    {
        report.set(protection, Status::Enforced);
    }
    report.set(Protection::NetworkNamespace, applies(plan.new_network_namespace));
    report.set(Protection::Seccomp, Status::Enforced);
    if plan.landlock.is_some() {
        report.set(Protection::Landlock, Status::Enforced);
    }
    report.set(Protection::CgroupLimits, applies(policy.limits.needs_cgroup()));
    report.set(
        Protection::ResourceLimits,
        applies(policy.limits.nofile.is_some() || policy.limits.fsize_bytes.is_some()),
    );
    report.set(Protection::DiskLimit, applies(policy.limits.disk_bytes.is_some()));
}

/// The id maps. Rootless, the kernel allows one line: the sandbox's identity is the invoker. As host root, a
/// dedicated 65536-id range (never host id 0) — except that, when the policy shares a writable directory owned by
/// an ordinary user, the sandbox's identity maps to that owner, so it can write there and what it writes belongs
/// to the owner (as if that user had run airlock rootless). A share owned by host root gets no such mapping:
/// root inside is not root outside — except in a VM guest where `guest_root_owner` says guest root may be its
/// owner (see the caller).
fn id_plan(
    host_root: bool,
    multi_user_root: bool,
    (euid, egid): (u32, u32),
    (uid, gid): (u32, u32),
    (writable_owners, guest_root_owner): (&[(String, u32, u32)], bool),
    host: &HostContext,
    enforcement: &mut EnforcementReport,
) -> Result<(IdPlan, Option<HostIdRange>), PrepareError> {
    if !host_root {
        // A writable root is a distribution's tree, whose users (apt's `_apt`, `nobody`) need ids of their own:
        // the invoker's subordinate ids, when the administrator gave some, or one id and a notice of what fails.
        if multi_user_root {
            match userns::find_subordinate_ids(euid, egid) {
                Ok(tools) => {
                    let maps = (
                        userns::subordinate_map(uid, euid, tools.uids),
                        userns::subordinate_map(gid, egid, tools.gids),
                    );
                    if let (Some(uid_map), Some(gid_map)) = maps {
                        let ids = IdPlan {
                            host_root,
                            init_uid: 0,
                            init_gid: 0,
                            uid,
                            gid,
                            init_host_uid: if uid == 0 { euid } else { tools.uids.0 },
                            init_host_gid: if gid == 0 { egid } else { tools.gids.0 },
                            host_uid: euid,
                            host_gid: egid,
                            uid_map,
                            gid_map,
                            map_tools: Some(tools),
                        };
                        return Ok((ids, None));
                    }
                    enforcement
                        .notices
                        .push(Notice::SingleIdMap { missing: format!("{uid}:{gid} is beyond the subordinate ranges") });
                }
                Err(missing) => enforcement.notices.push(Notice::SingleIdMap { missing }),
            }
        }
        let ids = IdPlan {
            host_root,
            init_uid: uid,
            init_gid: gid,
            uid,
            gid,
            init_host_uid: euid,
            init_host_gid: egid,
            host_uid: euid,
            host_gid: egid,
            uid_map: format!("{uid} {euid} 1\n"),
            gid_map: format!("{gid} {egid} 1\n"),
            map_tools: None,
        };
        return Ok((ids, None));
    }
    for id in [uid, gid] {
        if id >= HOST_RANGE_SIZE {
            return Err(PrepareError::IdOutOfRange(id));
        }
    }
    let mut owner: Option<(&str, u32, u32)> = None;
    for (path, owner_uid, owner_gid) in writable_owners {
        if *owner_uid == 0 && !guest_root_owner {
            enforcement.notices.push(Notice::RootOwnedWritableShare { path: path.clone() });
            continue;
        }
        match owner {
            None => owner = Some((path, *owner_uid, *owner_gid)),
            Some((first, o, _)) if o != *owner_uid => {
                return Err(PrepareError::WritableOwnersDiffer { first: first.to_string(), second: path.clone() })
            }
            Some(_) => {}
        }
    }
    // Joining: the plan's host-side ids are never used (the running sandbox's namespace has its maps).
    let (range, base) = match (host.joining, host.vm_id_base) {
        (true, _) => (None, HOST_RANGE_BASE),
        // A VM guest's: the host holds the range.
        (false, Some(base)) => (None, base),
        (false, None) => {
            let range = userns::allocate_host_id_range(&host.lock_dir)?;
            let base = range.base;
            (Some(range), base)
        }
    };
    let owner_gid = owner.map(|(_, _, g)| g).filter(|g| *g != 0 || guest_root_owner);
    // Root inside is the owner when the identity is root and a writable share's owner maps to it.
    let owner_uid = owner.map(|(_, u, _)| u);
    let ids = IdPlan {
        init_host_uid: if uid == 0 { owner_uid.unwrap_or(base) } else { base },
        init_host_gid: if gid == 0 { owner_gid.unwrap_or(base) } else { base },
        host_uid: owner_uid.unwrap_or(base + uid),
        host_gid: owner_gid.unwrap_or(base + gid),
        host_root,
        init_uid: 0,
        init_gid: 0,
        uid,
        gid,
        uid_map: userns::range_map(base, HOST_RANGE_SIZE, uid, owner.map(|(_, u, _)| u)),
        gid_map: userns::range_map(base, HOST_RANGE_SIZE, gid, owner_gid),
        map_tools: None,
    };
    Ok((ids, range))
}

/// In an `--isolation vm` guest of a rootless host (no [`HostContext::vm_id_base`]), a root overlay (an image's
/// layers, a writable root) keeps the ids its files have on disk: ids 0..65536 inside are the guest's own. 9p
/// cannot be idmapped in the guest; the user's QEMU writes the host's files as the user whatever the guest's
/// ids. (A root host idmaps the layers in QEMU's mount namespace and gives the guest its range instead.)
/// Everything else still applies: the user namespace, the capabilities the policy leaves root, no_new_privs,
/// seccomp and Landlock.
fn guest_identity_ids((uid, gid): (u32, u32)) -> IdPlan {
    IdPlan {
        host_root: true,
        init_uid: 0,
        init_gid: 0,
        uid,
        gid,
        init_host_uid: 0,
        init_host_gid: 0,
        host_uid: uid,
        host_gid: gid,
        uid_map: userns::range_map(0, HOST_RANGE_SIZE, uid, None),
        gid_map: userns::range_map(0, HOST_RANGE_SIZE, gid, None),
        map_tools: None,
    }
}

/// A limit above what the host has is a mistake (a missing suffix, a copied profile), not a request for "no
/// limit": refuse it with the host's figure.
fn check_limits_against_host(limits: &policy::sandbox::Limits) -> Result<(), PrepareError> {
    // Each host figure is read only when its limit was asked for.
    if let Some(asked) = limits.memory_bytes {
        if let Some(total) = sys::memory::total_ram_bytes().ok().filter(|total| asked > *total) {
            return Err(PrepareError::LimitAboveHost {
                flag: "--memory",
                asked: crate::cgroups::format_bytes(asked),
                available: crate::cgroups::format_bytes(total),
            });
        }
    }
    // Every host has at least one CPU: only more than one needs the count (which reads this process's cgroup
    // and its CPU quota files: ten system calls before every limited run).
    if let Some(asked) = limits.cpus.filter(|&c| c > 1.0) {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        if asked > cpus {
            return Err(PrepareError::LimitAboveHost {
                flag: "--cpus",
                asked: asked.to_string(),
                available: cpus.to_string(),
            });
        }
    }
    if let Some(asked) = limits.pids {
        let pid_max =
            crate::host::read_small("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(max) = pid_max.filter(|max| asked > *max) {
            return Err(PrepareError::LimitAboveHost {
                flag: "--pids",
                asked: asked.to_string(),
                available: max.to_string(),
            });
        }
    }
    Ok(())
}

/// The command's rlimits. Core dumps are always off: the host's `core_pattern` handler would write them outside
/// the sandbox. `nofile` and `fsize` come from the profile; both soft and hard limits are set, and neither may
/// exceed the current hard limit (raising it needs `CAP_SYS_RESOURCE`, which airlock does not assume).
fn rlimits(limits: &policy::sandbox::Limits) -> Result<Vec<(u32, u64, u64)>, PrepareError> {
    let mut out = vec![(libc::RLIMIT_CORE, 0, 0)];
    for (resource, asked, name) in [
        (libc::RLIMIT_NOFILE, limits.nofile, "limits.nofile"),
        (libc::RLIMIT_FSIZE, limits.fsize_bytes, "limits.fsize"),
    ] {
        let Some(asked) = asked else { continue };
        let hard = current_hard_limit(resource);
        if asked > hard {
            return Err(PrepareError::RlimitAboveHard { name, asked, hard });
        }
        out.push((resource, asked, asked));
    }
    Ok(out)
}

fn current_hard_limit(resource: u32) -> u64 {
    sys::process::hard_limit(resource).unwrap_or(0)
}

fn command_plan(policy: &SandboxPolicy) -> Result<CommandPlan, PrepareError> {
    let argv = policy.command.iter().map(|a| cstring(a)).collect::<Result<Vec<_>, _>>()?;
    let envp = policy.env.iter().map(|(k, v)| cstring(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    let name = policy.command.first().cloned().unwrap_or_default();
    let candidates = if name.contains('/') {
        vec![cstring(&name)?]
    } else {
        let path = policy.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
        path.split(':')
            .filter(|dir| dir.starts_with('/'))
            .map(|dir| cstring(&format!("{}/{name}", dir.trim_end_matches('/'))))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(CommandPlan::new(argv, envp, candidates, cstring(&policy.cwd)?, name))
}

/// Highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap`); 63 when unreadable.
pub fn read_cap_last() -> u32 {
    crate::host::read_small("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        // Unknown: try every bit; PR_CAPBSET_DROP of an unknown capability is EINVAL, which is skipped.
        .unwrap_or(63)
}

/// Why Landlock is not available, from the errno of the version probe.
pub fn landlock_reason(errno: i32) -> String {
    match errno {
        libc::ENOSYS => "this kernel is built without Landlock (CONFIG_SECURITY_LANDLOCK)".to_string(),
        libc::EOPNOTSUPP => "Landlock is built in but disabled (add landlock to the lsm= boot parameter)".to_string(),
        other => format!("the Landlock probe failed: {}", crate::failure::errno_text(other)),
    }
}
