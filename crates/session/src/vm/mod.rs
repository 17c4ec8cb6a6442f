//! `--isolation vm`: each sandbox in a virtual machine of its own (QEMU), with its own kernel. The guest's init is
//! airlock itself (`guest`), which runs the command with the same namespace engine as the host's backend: an
//! escape from that engine as guest root still meets the VM's wall.
//!
//! The host side ([`VmBackend`]): finds the guest kernel (`kernel`), builds or reuses the initramfs
//! (`initramfs`), exports only the host paths the policy shows (virtio-9p, read-only where the policy says), keeps
//! a `cow` workspace's layer on the host (the overlay is mounted in QEMU's own mount namespace, so it is on no
//! mount table once QEMU is gone, and `airlock diff`/`commit` read the layer as after a namespace run), starts
//! QEMU (`qemu`), sends the request, relays the standard streams and returns the command's outcome.
//!
//! `--net allow` gives the guest a virtio-net NIC whose other end is the same network gateway as a namespace
//! sandbox's (`net`): the allow-list, DNS and the audit records are the gateway's, on the host.
//!
//! `airlock run`, and `create` with `exec` into it (`held`); `run -t` is refused (exit 125) rather than run
//! without the VM; `--net host` is refused for good (it would give the guest the host's network).

pub mod cgroup;
pub mod files;
pub mod guest;
pub mod held;
mod held_guest;
pub mod initramfs;
pub mod kernel;
pub mod net;
pub mod protocol;
pub mod qemu;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use policy::sandbox::{Network, Rootfs, SandboxPolicy, WorkspaceMode};
use runtime::prepare::HostContext;
use runtime::sandbox::{RunOutcome, RunReport};

pub use kernel::{Accel, GuestKernel, KvmFlavour};
use protocol::{GuestRequest, Share, ShareExport, Symlink};

/// What the VM is: accelerator, kernel, size.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub accel: Accel,
    /// `None`: the newest `/boot/vmlinuz-*` with its modules.
    pub kernel: Option<PathBuf>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Where the built initramfs images are kept.
    pub cache_dir: PathBuf,
}

/// The guest's memory without a `--memory` limit, and what it gets over one (its kernel, the initramfs, the
/// agent and the engine).
pub const DEFAULT_MEMORY_MIB: u64 = 512;
pub const MEMORY_OVERHEAD_MIB: u64 = 256;

impl VmConfig {
    /// The profile's `[vm]` table, each setting overridden by its variable: `AIRLOCK_VM_ACCEL` (`kvm`, the
    /// default, or `tcg`) and `AIRLOCK_VM_KERNEL` (a kernel image); sized by the policy's `--memory` and `--cpus`.
    pub fn new(
        policy: &SandboxPolicy,
        profile: &policy::profile::VmSection,
        cache_dir: PathBuf,
    ) -> Result<VmConfig, VmError> {
        let accel = match std::env::var("AIRLOCK_VM_ACCEL").ok().or_else(|| profile.accel.clone()) {
            Some(text) => Accel::parse(&text).ok_or(VmError::BadAccel(text))?,
            None => Accel::Kvm,
        };
        let kernel = std::env::var_os("AIRLOCK_VM_KERNEL")
            .map(PathBuf::from)
            .or_else(|| profile.kernel.as_ref().map(PathBuf::from));
        let memory_mib = match policy.limits.memory_bytes {
            Some(bytes) => bytes.div_ceil(1 << 20) + MEMORY_OVERHEAD_MIB,
            None => DEFAULT_MEMORY_MIB,
        };
        let cpus = policy.limits.cpus.map_or(1, |c| c.ceil().max(1.0) as u32);
        Ok(VmConfig { accel, kernel, memory_mib, cpus, cache_dir })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("--isolation vm does not support {0} yet")]
    Unsupported(String),
    #[error("vm: the sandbox's host id range")]
    IdRange(#[source] runtime::userns::UsernsError),
    #[error(
        "--isolation vm does not take --net host: it would give the guest the host's network (use --net allow \
         with the destinations the command needs)"
    )]
    NetHost,
    #[error("vm: --net allow")]
    Network(#[from] net::NetError),
    #[error("vm accel {0:?} ([vm] accel, AIRLOCK_VM_ACCEL): expected kvm or tcg")]
    BadAccel(String),
    #[error("vm")]
    Kernel(#[from] kernel::KernelError),
    #[error(
        "vm: this host's KVM is PVM (kvm_pvm, no vmx/svm), which runs only guest kernels built with \
         CONFIG_PVM_GUEST, and {kernel} is not one: name a PVM guest kernel (AIRLOCK_VM_KERNEL=PATH), or \
         emulate with AIRLOCK_VM_ACCEL=tcg (slow; still a kernel of its own)"
    )]
    PvmOnly { kernel: String },
    #[error(
        "vm: KVM is not usable ({0}): load kvm_intel/kvm_amd and give your user access to /dev/kvm, or \
         emulate with AIRLOCK_VM_ACCEL=tcg (slow; still a kernel of its own)"
    )]
    NoKvm(String),
    #[error("vm: initramfs")]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("vm")]
    Qemu(#[from] qemu::QemuError),
    #[error(transparent)]
    VmmCgroup(#[from] cgroup::VmmCgroupError),
    #[error(transparent)]
    Held(#[from] held::HeldError),
    #[error("vm: cannot read {path}")]
    ReadHost {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vm: cannot stage a bound file for the guest at {path}")]
    StageFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vm: cannot give the copy-on-write layer's directory {path} to the workspace's owner")]
    ChownLayer {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs each sandbox in a VM of its own (see the module's documentation).
#[derive(Debug, Clone)]
pub struct VmBackend {
    pub config: VmConfig,
}

impl VmBackend {
    /// Runs `policy`'s command in a new VM to its end.
    pub fn run_vm(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        audit: Option<runtime::sandbox::AuditRequest<'_>>,
    ) -> Result<(RunOutcome, RunReport), VmError> {
        let (kernel, initrd, mut request, mounts) = self.prepare(policy, host)?;
        // --net allow: the gateway serves before the guest boots (the launch described it in `host.gateway`).
        let network = net::start_for(policy, host, &mut request)?;
        // The guest's engine runs its seccomp listener as the namespace backend does on the host, and sends each
        // record here, where the log is written: the guest never holds the log file.
        let mut audit = audit.filter(|a| a.notify.any());
        request.audit = audit.as_ref().map(|a| a.notify.into());
        // QEMU's host cgroup (when limits are asked) before QEMU starts: its child joins it before exec.
        let vmm_cgroup = cgroup::VmmCgroup::create(policy, &self.config, host.name.as_deref().unwrap_or("run"), warn)?;
        // `-t`: the terminal in the guest does the line discipline; ours passes every key as it comes (restored
        // however this ends).
        let _raw = host.tty.and_then(|_| held::RawTerminal::enter());
        let outcome = qemu::run_guest(qemu::GuestLaunch {
            config: &self.config,
            kernel: &kernel,
            initrd: &initrd,
            request: &request,
            mounts: &mounts,
            cgroup_join: vmm_cgroup.as_ref().map(|c| c.join_files()),
            nic: network.as_ref().map(net::VmNetwork::qemu_fd),
            warn,
            audit: audit.as_mut().map(|a| &mut *a.sink as &mut dyn runtime::notify::AuditSink),
        });
        // QEMU is gone: the gateway records the connections still open and ends.
        if let Some(network) = network {
            network.stop();
        }
        // QEMU is reaped (run_guest waits for it, whatever the outcome): the cgroup is empty.
        let outcome = match (outcome, &vmm_cgroup) {
            (Err(e), Some(c)) => Err(c.explain(e)),
            (outcome, _) => outcome.map_err(VmError::from),
        };
        if let Some(c) = vmm_cgroup {
            c.remove()?;
        }
        Ok((outcome?, RunReport::default()))
    }
}

impl VmBackend {
    /// What a guest boots with: the kernel (usable with this accelerator), the initramfs, the request and the
    /// workspace's overlay.
    fn prepare(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
    ) -> Result<(GuestKernel, PathBuf, GuestRequest, HostMounts), VmError> {
        refuse_unsupported(policy, host)?;
        let kernel = GuestKernel::find(self.config.kernel.as_deref())?;
        if self.config.accel == Accel::Kvm {
            match kernel::kvm_flavour() {
                KvmFlavour::Hardware => {}
                KvmFlavour::Pvm if kernel.is_pvm_guest() => {}
                KvmFlavour::Pvm => return Err(VmError::PvmOnly { kernel: kernel.image.display().to_string() }),
                KvmFlavour::Unusable(why) => return Err(VmError::NoKvm(why)),
            }
        }
        let initrd = initramfs::ensure(&self.config.cache_dir, &kernel)?;
        // What a killed airlock left is swept by the next VM's start, as its VMM cgroup is (`cgroup`).
        sweep_stale_staging_dirs(&std::env::temp_dir());
        let (request, mounts) = guest_request(policy, host)?;
        Ok((kernel, initrd, request, mounts))
    }
}

/// What this slice does not run in a VM: refused before anything starts, never run without the VM.
fn refuse_unsupported(policy: &SandboxPolicy, host: &HostContext) -> Result<(), VmError> {
    let unsupported = |what: &str| Err(VmError::Unsupported(what.to_string()));
    match &policy.network {
        Network::None => {}
        Network::Allow(_) if host.gateway.is_none() => return unsupported("--net allow without its gateway"),
        Network::Allow(_) => {}
        Network::Host => return Err(VmError::NetHost),
    }
    // A writable root keeps its writes in the guest (a tmpfs of the guest's engine, bounded by `--disk` as on
    // the host) for the VM's life: an anonymous run's, and a created sandbox's (which no later run resumes:
    // `create` has no `--resume`). A run's kept root layer is on the host for `run --resume`, and the guest's
    // overlay cannot have its upper directory there (9p cannot be one): refused.
    if policy.writable_root && host.root_layer.is_some() && !host.hold {
        return unsupported("a writable root kept for --resume (--writable-root or --image with a kept run)");
    }
    for bind in &policy.binds {
        let path = std::path::Path::new(&bind.source);
        if !path.is_dir() && !path.is_file() {
            return unsupported(&format!("binding {} (neither a directory nor a regular file)", bind.source));
        }
    }
    Ok(())
}

/// What QEMU's launcher mounts in QEMU's own mount namespace before QEMU starts: on no mount table of the host,
/// gone with QEMU.
#[derive(Debug, Default)]
pub struct HostMounts {
    pub workspace: Option<WorkspaceOverlay>,
    pub files: Option<FileBinds>,
    /// Host root, a root other than the host's: the sandbox's id range and the root's layers idmapped into it.
    pub ids: Option<GuestIdRange>,
}

/// As host root, a VM whose root is not the host's (an image, `--rootfs DIR`) gets a host id range as a
/// namespace sandbox does, held on the host for the VM's life, and the guest's engine maps the sandbox's ids onto
/// it: root inside is the range's first id, no owner of a root-owned share. The root overlay's layers (an image's,
/// `--writable-root`'s lower) are what must stay the sandbox's own: 9p cannot be idmapped in the guest (nor can
/// the guest's overlay), so each is idmapped here, in QEMU's mount namespace, over itself: id N on disk is the
/// range's id N to QEMU, which shows it so to the guest (9p passthrough), and N inside.
#[derive(Debug)]
pub struct GuestIdRange {
    /// The range's lock (released when the VM has ended and this is dropped).
    pub range: runtime::userns::HostIdRange,
    /// The root overlay's layers to idmap, and the user namespace whose maps they take (the sandbox's: the
    /// range, with the identity inside at the writable shares' owner when they have one that is not root).
    pub layers: Vec<PathBuf>,
    pub userns: Option<OwnedFd>,
}

/// Single files the policy binds (`--bind FILE`, `--ro-bind FILE`): 9p exports directories only, so each file is
/// bound (in QEMU's mount namespace) over an empty placeholder in a staging directory of its own, which is the
/// export; the guest's engine binds the placeholder's path as the policy bound the file. The host sees the
/// staging directory with its empty placeholders while the VM runs; it goes when this does.
#[derive(Debug)]
pub struct FileBinds {
    pub staging: PathBuf,
    /// (the host file, its placeholder in `staging`, read-only).
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
}

/// A new directory `$TMPDIR/airlock-vm-KIND-PID-N` of this run's (mode 0755: QEMU may be an ordinary user by the
/// time it opens what is staged there). `create`, not `create_dir_all`: a directory someone else made first under
/// that name is refused, never used.
fn make_staging_dir(kind: &str) -> Result<PathBuf, VmError> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir();
    // The maker as a VMM cgroup's name carries it (pid namespace, pid, start time): the sweep tells a dead
    // maker from one in another pid namespace or a process that reused the pid.
    let owner = runtime::cgroups::CgroupOwner::current().map_err(|e| VmError::StageFile {
        path: tmp.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let staging = tmp.join(format!("airlock-vm-{kind}-{}-{n}", owner.tag()));
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&staging)
        .map_err(|source| VmError::StageFile { path: staging.display().to_string(), source })?;
    Ok(staging)
}

/// The staging directories' kinds (`airlock-vm-KIND-PID-N`).
const STAGING_KINDS: [&str; 2] = ["files", "workspace"];

/// The maker of a staging directory named `airlock-vm-KIND-PIDNS-PID-START-N`, if it is one.
fn staging_dir_maker(name: &str) -> Option<runtime::cgroups::CgroupOwner> {
    let (kind, rest) = name.strip_prefix("airlock-vm-")?.split_once('-')?;
    let (owner, n) = runtime::cgroups::CgroupOwner::from_cgroup_name(rest)?;
    (STAGING_KINDS.contains(&kind) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(owner)
}

/// Removes from `tmp` the staging directories of airlocks that are gone (killed before their `Drop`s ran, say by
/// SIGKILL: QEMU and its mount namespace went with them, so what is left is plain): an empty `workspace`
/// subdirectory and empty placeholder files, then the directory if that emptied it. Anything else is left, and
/// so is a directory another process could still use (its maker may be alive, as the VMM cgroups' sweep
/// judges it: `CgroupOwner::may_be_alive`). Every step is relative to a
/// descriptor of the directory opened without following a symlink, so a name someone else put in `tmp` leads
/// nowhere but into their own directory.
pub fn sweep_stale_staging_dirs(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    let Ok(tmp_cstr) = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes()) else { return };
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let Ok(tmp_fd) = sys::fd::openat(libc::AT_FDCWD, &tmp_cstr, flags, 0) else { return };
    let Ok(us) = runtime::cgroups::CgroupOwner::current() else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(maker) = name.to_str().and_then(staging_dir_maker) else { continue };
        if maker.may_be_alive(us.pid_namespace) {
            continue;
        }
        let Ok(name) = std::ffi::CString::new(name.as_encoded_bytes()) else { continue };
        let Ok(dir) = sys::fd::openat(tmp_fd.as_raw_fd(), &name, flags, 0) else { continue };
        empty_staging_dir(&dir);
        let _ = sys::fs::unlinkat(tmp_fd.as_raw_fd(), &name, libc::AT_REMOVEDIR);
    }
}

/// The empty directory and empty regular files in a staging directory, removed.
fn empty_staging_dir(dir: &OwnedFd) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else { return };
    for entry in entries.flatten() {
        let Ok(name) = std::ffi::CString::new(entry.file_name().as_encoded_bytes()) else { continue };
        let Ok(stat) = sys::fs::fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW) else { continue };
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let _ = sys::fs::unlinkat(dir.as_raw_fd(), &name, libc::AT_REMOVEDIR);
            }
            libc::S_IFREG if stat.st_size == 0 => {
                let _ = sys::fs::unlinkat(dir.as_raw_fd(), &name, 0);
            }
            _ => {}
        }
    }
}

impl FileBinds {
    fn new() -> Result<FileBinds, VmError> {
        // A QEMU that is no longer root (see `qemu::UnprivilegedQemu`) opens the placeholders, which are the bound
        // files in its namespace (their own modes apply); here they are empty.
        Ok(FileBinds { staging: make_staging_dir("files")?, binds: Vec::new() })
    }

    /// The placeholder for `source` (an empty file made now), as the guest will find it.
    fn add(&mut self, source: &str, readonly: bool) -> Result<String, VmError> {
        let placeholder = self.staging.join(self.binds.len().to_string());
        std::fs::File::create(&placeholder)
            .map_err(|source| VmError::StageFile { path: placeholder.display().to_string(), source })?;
        let shown = placeholder.to_string_lossy().into_owned();
        self.binds.push((PathBuf::from(source), placeholder, readonly));
        Ok(shown)
    }
}

impl Drop for FileBinds {
    fn drop(&mut self) {
        // QEMU is gone (its launcher outlives it): the placeholders are plain empty files again.
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A `cow` workspace's overlay, mounted by QEMU's launcher in its own mount namespace on the subdirectory
/// [`WORKSPACE_SUBDIR`] of a staging directory of its own, which is what QEMU exports; the guest binds that
/// subdirectory at the workspace's path. Not the workspace's path itself, exported: QEMU's 9p server holds its
/// export's root open from the start and resolves every path from there, so an overlay mounted on the export's
/// root could never be replaced, while one mounted on a subdirectory is found again by each lookup: a checkpoint
/// or rollback of the running sandbox replaces it there (`store::layer::live_vm`). The host sees the staging
/// directory, with its empty subdirectory, while the VM runs; it goes when this does.
#[derive(Debug)]
pub struct WorkspaceOverlay {
    pub workspace: String,
    /// Lower directories, top first: the checkpoints (newest first), then the workspace.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The exported staging directory.
    pub staging: PathBuf,
}

/// The staging directory's subdirectory the overlay is mounted on.
pub const WORKSPACE_SUBDIR: &str = "workspace";

impl WorkspaceOverlay {
    /// Where the overlay is mounted (in QEMU's mount namespace).
    pub fn mount_point(&self) -> PathBuf {
        self.staging.join(WORKSPACE_SUBDIR)
    }

    /// A new staging directory (0755) with its empty subdirectory, given to `owner` (a host root's QEMU that
    /// becomes the workspace's owner, `qemu::UnprivilegedQemu`, takes the owner from the export).
    fn staging(owner: Option<(u32, u32)>) -> Result<PathBuf, VmError> {
        use std::os::unix::fs::DirBuilderExt;
        let fail = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| VmError::StageFile { path, source }
        };
        let staging = make_staging_dir("workspace")?;
        let sub = staging.join(WORKSPACE_SUBDIR);
        std::fs::DirBuilder::new().mode(0o755).create(&sub).map_err(fail(&sub))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&staging, Some(uid), Some(gid)).map_err(fail(&staging))?;
        }
        Ok(staging)
    }
}

impl Drop for WorkspaceOverlay {
    fn drop(&mut self) {
        // QEMU is gone (its launcher outlives it), and the overlay with its mount namespace: two empty directories.
        let _ = std::fs::remove_dir(self.mount_point());
        let _ = std::fs::remove_dir(&self.staging);
    }
}

/// The request for the guest: the policy as the guest sees it, and what the host exports for it.
fn guest_request(policy: &SandboxPolicy, host: &HostContext) -> Result<(GuestRequest, HostMounts), VmError> {
    let mut shares: Vec<Share> = Vec::new();
    let mut symlinks = Vec::new();
    let mut share = |path: &str, readonly: bool, export: Option<ShareExport>| {
        // A path exported once (the most permissive wins only when the policy asks for both: a bind inside the
        // workspace, say): the engine applies each bind's own read-only flag inside.
        if let Some(existing) = shares.iter_mut().find(|s| s.path == path) {
            existing.readonly &= readonly;
            // A cow workspace's path that was exported as it is already (`--rootfs` the workspace): the staging
            // directory instead, so its overlay can be replaced.
            if export.is_some() {
                existing.export = export;
            }
            return;
        }
        let tag = format!("airlock{}", shares.len());
        shares.push(Share { tag, path: path.to_string(), readonly, export });
    };
    match &policy.rootfs {
        Rootfs::Host => {
            for entry in runtime::prepare::HOST_ROOTFS_ENTRIES {
                let path = format!("/{entry}");
                match std::fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        let target = std::fs::read_link(&path)
                            .map_err(|source| VmError::ReadHost { path: path.clone(), source })?;
                        symlinks.push(Symlink { path, target: target.to_string_lossy().into_owned() });
                    }
                    Ok(meta) if meta.is_dir() => share(&path, true, None),
                    _ => {}
                }
            }
        }
        Rootfs::Dir(dir) => share(dir, true, None),
        // An image: each unpacked layer exported read-only at its own path; the guest's engine stacks them
        // into the root overlay exactly as on the host (a whiteout is a 0/0 device, which 9p shows the guest
        // as it is).
        Rootfs::Layers(layers) => {
            for layer in layers {
                share(layer, true, None);
            }
        }
    }
    let mut guest_policy = policy.clone();
    let mut overlay = None;
    if let Some(ws) = &policy.workspace {
        match ws.mode {
            WorkspaceMode::Ro => share(&ws.path, true, None),
            WorkspaceMode::Rw => share(&ws.path, false, None),
            WorkspaceMode::Cow => {
                // The merged view, exported read-write: the guest writes through it into the layer on the host.
                let layer = host.layer.as_ref().ok_or_else(|| {
                    VmError::Unsupported("a cow workspace without a kept layer (give --name)".to_string())
                })?;
                // As on a host (`runtime::sandbox`), the layer's directories belong to the workspace's owner, whom
                // the guest's root maps to: the merged view's top directory is the upper's, and the guest's engine
                // finds the owner there. A workspace owned by root keeps a root-owned layer (and gets the notice
                // inside, as its root is no owner of anything shared from the host: see `runtime::prepare`).
                let mut owner = None;
                if sys::process::effective_uid() == 0 {
                    let meta = std::fs::metadata(&ws.path)
                        .map_err(|source| VmError::ReadHost { path: ws.path.clone(), source })?;
                    for dir in [&layer.upper, &layer.work] {
                        std::os::unix::fs::chown(dir, Some(meta.uid()), Some(meta.gid()))
                            .map_err(|source| VmError::ChownLayer { path: dir.display().to_string(), source })?;
                    }
                    owner = Some((meta.uid(), meta.gid()));
                }
                let mut lower = layer.frozen.clone();
                lower.push(PathBuf::from(&ws.path));
                let staged = WorkspaceOverlay {
                    workspace: ws.path.clone(),
                    lower,
                    upper: layer.upper.clone(),
                    work: layer.work.clone(),
                    staging: WorkspaceOverlay::staging(owner)?,
                };
                let export = ShareExport {
                    dir: staged.staging.to_string_lossy().into_owned(),
                    subdir: WORKSPACE_SUBDIR.to_string(),
                };
                overlay = Some(staged);
                share(&ws.path, false, Some(export));
                if let Some(w) = guest_policy.workspace.as_mut() {
                    w.mode = WorkspaceMode::Rw;
                }
            }
        }
    }
    let mut files: Option<FileBinds> = None;
    for (index, bind) in policy.binds.iter().enumerate() {
        if std::path::Path::new(&bind.source).is_dir() {
            share(&bind.source, !bind.writable, None);
            continue;
        }
        let staged = match files.as_mut() {
            Some(f) => f,
            None => files.insert(FileBinds::new()?),
        };
        let placeholder = staged.add(&bind.source, !bind.writable)?;
        if let Some(b) = guest_policy.binds.get_mut(index) {
            b.source = placeholder;
        }
    }
    if let Some(f) = &files {
        // Writable when a bound file is: each read-only one is read-only in QEMU's namespace and in the guest.
        let writable = f.binds.iter().any(|(_, _, readonly)| !readonly);
        share(&f.staging.to_string_lossy(), !writable, None);
        // The export belongs to the writable files' owner (when they have one, not root), as a workspace does: a
        // host root's QEMU that becomes that owner (`qemu::UnprivilegedQemu`) takes it from the export.
        let owners: std::collections::BTreeSet<(u32, u32)> = f
            .binds
            .iter()
            .filter(|(_, _, readonly)| !readonly)
            .filter_map(|(source, _, _)| std::fs::metadata(source).ok().map(|m| (m.uid(), m.gid())))
            .collect();
        if let (true, [(uid, gid)]) = (sys::process::effective_uid() == 0, owners.iter().collect::<Vec<_>>().as_slice())
        {
            if *uid != 0 {
                std::os::unix::fs::chown(&f.staging, Some(*uid), Some(*gid))
                    .map_err(|source| VmError::StageFile { path: f.staging.display().to_string(), source })?;
            }
        }
    }
    let ids = guest_id_range(policy, host)?;
    // The guest's engine has no host cgroup to limit: its own cgroups (the guest's) apply the limits to the
    // command inside; on the host, the VM's size bounds the guest and QEMU's own cgroup (`cgroup`) bounds QEMU.
    let request = GuestRequest {
        policy: guest_policy,
        name: host.name.clone(),
        shares,
        symlinks,
        audit: None,
        network: None,
        held: host.hold,
        tty: host.tty.map(|w| (w.ws_row, w.ws_col)),
        id_base: ids.as_ref().map(|ids| ids.range.base),
    };
    Ok((request, HostMounts { workspace: overlay, files, ids }))
}

/// The host id range of a VM whose root is not the host's, as host root (see [`GuestIdRange`]); `None` rootless
/// (QEMU is the user and writes as the user whatever the guest's ids) and for `--rootfs host` (QEMU becomes an
/// ordinary user, `qemu::UnprivilegedQemu`).
fn guest_id_range(policy: &SandboxPolicy, host: &HostContext) -> Result<Option<GuestIdRange>, VmError> {
    if sys::process::effective_uid() != 0 || policy.rootfs == Rootfs::Host {
        return Ok(None);
    }
    let range = runtime::userns::allocate_host_id_range(&host.lock_dir).map_err(VmError::IdRange)?;
    let layers: Vec<PathBuf> = match &policy.rootfs {
        Rootfs::Layers(layers) => layers.iter().map(PathBuf::from).collect(),
        Rootfs::Dir(dir) if policy.writable_root => vec![PathBuf::from(dir)],
        _ => Vec::new(),
    };
    let userns = match layers.is_empty() {
        true => None,
        false => {
            // The layers take the maps the guest's engine gives the sandbox (`runtime::prepare::id_plan`): the
            // range, with the identity inside mapped to the writable shares' owner when they have one that is not
            // root (the first; owners that differ fail the run in the guest). The guest sees the shares' owners
            // as the host has them (9p passthrough), so it finds the same owner.
            let size = runtime::userns::HOST_RANGE_SIZE;
            let (uid, gid) = (policy.identity.uid, policy.identity.gid);
            let owner = writable_share_owner(policy)?;
            let uid_map = runtime::userns::range_map(range.base, size, uid, owner.map(|(u, _)| u));
            let gid_map = runtime::userns::range_map(range.base, size, gid, owner.map(|(_, g)| g).filter(|g| *g != 0));
            Some(runtime::userns::user_namespace_with_maps(range.base, &uid_map, &gid_map).map_err(VmError::IdRange)?)
        }
    };
    Ok(Some(GuestIdRange { range, layers, userns }))
}

/// The first writable share's owner that is not root (the workspace, then `--bind`s, as the guest's engine
/// finds them), if any.
fn writable_share_owner(policy: &SandboxPolicy) -> Result<Option<(u32, u32)>, VmError> {
    let workspace = policy.workspace.iter().filter(|w| w.mode != WorkspaceMode::Ro).map(|w| w.path.as_str());
    let binds = policy.binds.iter().filter(|b| b.writable).map(|b| b.source.as_str());
    for path in workspace.chain(binds) {
        let meta = std::fs::metadata(path).map_err(|source| VmError::ReadHost { path: path.to_string(), source })?;
        if meta.uid() != 0 {
            return Ok(Some((meta.uid(), meta.gid())));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dir_names_say_their_maker() {
        let maker = |name: &str| staging_dir_maker(name).map(|o| (o.pid_namespace, o.pid, o.start_time));
        assert_eq!(maker("airlock-vm-workspace-4026531836-123-99-0"), Some((4026531836, 123, 99)));
        assert_eq!(maker("airlock-vm-files-1-7-5-12"), Some((1, 7, 5)));
        for other in [
            "airlock-vm-other-1-2-3-0",
            "airlock-vm-files-1-2-3",
            "airlock-vm-files-1-2-3-",
            "airlock-vm-files-1-2-3-x",
            "x",
        ] {
            assert_eq!(maker(other), None, "{other}");
        }
    }

    #[test]
    fn the_sweep_removes_only_what_a_dead_airlock_left_and_follows_no_symlink() {
        let tmp = std::env::temp_dir().join(format!("airlock-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).unwrap();
        // No process has a pid above the kernel's largest (2^22); the maker was in this pid namespace.
        let us = runtime::cgroups::CgroupOwner::current().unwrap();
        let dead = format!("{}-999999999-1", us.pid_namespace);
        let workspace = tmp.join(format!("airlock-vm-workspace-{dead}-0"));
        std::fs::create_dir_all(workspace.join(WORKSPACE_SUBDIR)).unwrap();
        let files = tmp.join(format!("airlock-vm-files-{dead}-1"));
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("0"), "").unwrap();
        std::fs::write(files.join("1"), "").unwrap();
        // Something that is not a placeholder: kept, and so is its directory.
        let odd = tmp.join(format!("airlock-vm-files-{dead}-2"));
        std::fs::create_dir(&odd).unwrap();
        std::fs::write(odd.join("0"), "data").unwrap();
        // A live airlock's (this test's).
        let live = tmp.join(format!("airlock-vm-files-{}-3", us.tag()));
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("0"), "").unwrap();
        // A maker in another pid namespace (its pid means nothing here): kept.
        let elsewhere = tmp.join(format!("airlock-vm-files-{}-999999999-1-5", us.pid_namespace + 1));
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("0"), "").unwrap();
        // A symlink under a staging name, to a directory with an empty file: neither is touched.
        let target = tmp.join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("0"), "").unwrap();
        let link = tmp.join(format!("airlock-vm-files-{dead}-4"));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        sweep_stale_staging_dirs(&tmp);
        assert!(!workspace.exists() && !files.exists());
        assert_eq!(std::fs::read_to_string(odd.join("0")).unwrap(), "data");
        assert!(live.join("0").exists());
        assert!(elsewhere.join("0").exists());
        assert!(target.join("0").exists());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
