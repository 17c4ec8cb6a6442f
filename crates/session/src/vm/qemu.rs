//! Starting QEMU for one guest and talking to it: its command line (hardened: no default devices, no user
//! config, seccomp sandbox, no reboot), the channels (virtio serial ports on socket pairs handed to QEMU by
//! descriptor, so nothing is left on disk), the kernel console (an unlinked file, its last line shown when the
//! guest fails), the standard streams relayed, the outcome read.
//!
//! QEMU dies with airlock (`PR_SET_PDEATHSIG`): a killed airlock leaves no QEMU, no socket, no mount (the
//! workspace overlay lives in QEMU's own mount namespace).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime::sandbox::RunOutcome;

use super::guest::GUEST_MARKER;
use super::kernel::{Accel, GuestKernel};
use super::protocol::{ControlReader, GuestMessage, GuestRequest, PORT_CONTROL, PORT_STDERR, PORT_STDIN, PORT_STDOUT};
use super::{HostMounts, VmConfig};

/// How long the guest may take to boot and answer (TCG on a busy host is slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long QEMU may take to stop once the guest has reported.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot find {program} (install qemu-system-x86)")]
    NotFound { program: String },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the guest's channels")]
    Channels(#[source] std::io::Error),
    #[error("guest kernel did not start: {0}")]
    DidNotStart(String),
    #[error("the guest stopped before the command ended: {0}")]
    Died(String),
    #[error("guest: {0}")]
    Guest(String),
    #[error("the guest sent a message airlock does not understand: {0}")]
    BadMessage(String),
    #[error(transparent)]
    Control(#[from] super::protocol::ControlError),
    #[error("audit: the guest sent a record the audit log cannot take")]
    BadAuditRecord(#[source] super::protocol::AuditRecordError),
    #[error("a path with a NUL byte: {0}")]
    Nul(String),
    #[error("cannot prepare QEMU to run as an ordinary user ({what})")]
    PrepareUnprivileged {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the mount flags of the bound file {path}")]
    BindFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the seccomp filter of root's QEMU")]
    PrepareRootFilter(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The capabilities host root's QEMU keeps (bit N is capability N, `linux/capability.h`): CHOWN 0, DAC_OVERRIDE
/// 1, DAC_READ_SEARCH 2, FOWNER 3, what a 9p `passthrough` share needs to keep the owners and modes the guest
/// sets. Everything else goes from the bounding set before QEMU is executed (root's exec then grants exactly
/// these): no MKNOD (a device node of the host's disk in a shared directory), no SETFCAP and no SYS_ADMIN (file
/// capabilities or `trusted.*` xattrs set through a share), no FSETID, no SYS_PTRACE, no NET_ADMIN, ... A guest
/// whose root escapes the engine inside it then finds a QEMU that can give host files no more than root's
/// owners and ordinary modes; the set-ID bits are refused by [`RootGuard`]'s filter.
const ROOT_QEMU_CAPABILITIES: u64 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 3;

/// What host root's QEMU gets before it is executed: the bounding set cut to [`ROOT_QEMU_CAPABILITIES`] and the
/// set-ID guard (`policy::seccomp::set_id_guard_profile`: no chmod, mknod or creating open with S_ISUID or
/// S_ISGID), so a guest cannot leave a set-user-ID-root program in a shared directory. Prepared before the fork
/// (compiling allocates); applied in the child with system calls only. QEMU's own `-sandbox` filter stacks on top.
struct RootGuard {
    cap_last: u32,
    filter: runtime::seccomp::SeccompProgram,
}

impl RootGuard {
    fn new() -> Result<RootGuard, QemuError> {
        let profile = policy::seccomp::set_id_guard_profile().map_err(|e| QemuError::PrepareRootFilter(Box::new(e)))?;
        let filter = runtime::seccomp::compile_seccomp_program(&profile)
            .map_err(|e| QemuError::PrepareRootFilter(Box::new(e)))?;
        Ok(RootGuard { cap_last: runtime::prepare::read_cap_last(), filter })
    }

    /// In the forked child, after the mounts (which need CAP_SYS_ADMIN) and before `execve`. Async-signal-safe:
    /// prctl and seccomp calls on values made before the fork.
    fn apply_in_child(&self) -> Result<(), i32> {
        runtime::caps::drop_bounding_set(self.cap_last, ROOT_QEMU_CAPABILITIES)?;
        // no_new_privs: nothing QEMU executes gains privileges (QEMU's -sandbox sets it too; the filter below
        // must not depend on that).
        sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?;
        runtime::seccomp::install_seccomp_on_current_thread(&self.filter)
    }
}

/// One guest to run.
pub struct GuestLaunch<'a> {
    pub config: &'a VmConfig,
    pub kernel: &'a GuestKernel,
    pub initrd: &'a Path,
    pub request: &'a GuestRequest,
    /// What is mounted in QEMU's own mount namespace: a `cow` workspace's overlay, bound files.
    pub mounts: &'a HostMounts,
    /// QEMU's host cgroup (`cgroup::VmmCgroup::join_files`), joined before exec.
    pub cgroup_join: Option<&'a [CString]>,
    /// `--net allow`: the NIC's socket, inherited by QEMU (`super::net`).
    pub nic: Option<RawFd>,
    pub warn: &'a mut dyn FnMut(&str),
    /// Where the guest's audit records go (the log, on the host), in the order they arrive.
    pub audit: Option<&'a mut dyn runtime::notify::AuditSink>,
}

/// The QEMU of this machine's architecture, from `PATH`.
pub fn qemu_program() -> Option<PathBuf> {
    let name = format!("qemu-system-{}", std::env::consts::ARCH);
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
}

/// QEMU's option syntax: a comma in a value is doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Runs the guest to the command's end.
pub fn run_guest(launch: GuestLaunch<'_>) -> Result<RunOutcome, QemuError> {
    let Spawned { mut child, channels, console } = spawn(&launch)?;
    let pidfd = sys::process::pidfd_open(child.id() as libc::pid_t).map_err(|e| QemuError::Channels(os_error(e)));

    let mut audit = launch.audit;
    let result = pidfd.and_then(|pidfd| {
        // A reborrow for the conversation (a trait object's lifetime shortens only outside the `Option`).
        let sink = audit.as_mut().map(|a| &mut **a as &mut dyn runtime::notify::AuditSink);
        converse(channels, &pidfd, launch.request, launch.warn, sink, &console)
    });
    // The records that arrived are written however the run ended (a guest that dies after an exec still has it
    // in the log).
    if let Some(sink) = audit {
        sink.flush();
    }
    // However it ended: the guest powers itself off after reporting; a guest that does not is killed.
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline || result.is_err() => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    result
}

/// A started QEMU (dying with this process), the host's ends of its ports, its console's log.
pub(super) struct Spawned {
    pub child: std::process::Child,
    pub channels: Channels,
    pub console: std::fs::File,
}

/// Starts QEMU for `launch` (its `warn` and `audit` are the conversation's, unused here).
pub(super) fn spawn(launch: &GuestLaunch<'_>) -> Result<Spawned, QemuError> {
    let program = qemu_program().ok_or_else(|| QemuError::NotFound { program: "qemu-system".to_string() })?;
    let (ctl, ctl_qemu) = UnixStream::pair().map_err(QemuError::Channels)?;
    let (stdin, stdin_qemu) = UnixStream::pair().map_err(QemuError::Channels)?;
    let (stdout, stdout_qemu) = UnixStream::pair().map_err(QemuError::Channels)?;
    let (stderr, stderr_qemu) = UnixStream::pair().map_err(QemuError::Channels)?;
    // AIRLOCK_VM_CONSOLE=FILE keeps the guest's console, verbose, in FILE (boot time, a guest that fails).
    let kept_console = std::env::var_os("AIRLOCK_VM_CONSOLE");
    let console = console_log(kept_console.as_deref().map(Path::new)).map_err(QemuError::Channels)?;
    let kept_console = kept_console.is_some();
    let console_fd = console.as_raw_fd();
    let mut inherited: Vec<RawFd> = vec![
        ctl_qemu.as_raw_fd(),
        stdin_qemu.as_raw_fd(),
        stdout_qemu.as_raw_fd(),
        stderr_qemu.as_raw_fd(),
        console_fd,
    ];

    let config = launch.config;
    let as_root = sys::process::effective_uid() == 0;
    // Host root's QEMU serving the host's own system directories drops to an ordinary user (see
    // `UnprivilegedQemu`); serving an image or a root directory, it stays root with the `RootGuard`.
    let drop_to = match as_root && launch.request.policy.rootfs == policy::sandbox::Rootfs::Host {
        true => Some(UnprivilegedQemu::for_shares(&launch.request.shares, config.accel)?),
        false => None,
    };
    if let Some(user) = &drop_to {
        // QEMU opens its console again by its /proc/self/fd link, as the user it will be.
        std::os::unix::fs::fchown(&console, Some(user.uid), Some(user.gid))
            .map_err(|source| QemuError::PrepareUnprivileged { what: "give it the console's log".into(), source })?;
    }
    // The kernel and the initramfs (in root's 0700 state directory) are opened here and read by QEMU through
    // their descriptors when it will not be root.
    let boot_files = match &drop_to {
        Some(_) => {
            let open = |path: &Path| {
                std::fs::File::open(path).map_err(|source| QemuError::PrepareUnprivileged {
                    what: format!("open {}", path.display()),
                    source,
                })
            };
            Some((open(&launch.kernel.image)?, open(launch.initrd)?))
        }
        None => None,
    };
    let boot_path = |file: Option<&std::fs::File>, path: &Path| match file {
        Some(f) => format!("/proc/self/fd/{}", f.as_raw_fd()),
        None => escape(&path.to_string_lossy()),
    };
    let kernel_arg = boot_path(boot_files.as_ref().map(|(k, _)| k), &launch.kernel.image);
    let initrd_arg = boot_path(boot_files.as_ref().map(|(_, i)| i), launch.initrd);
    if let Some((kernel, initrd)) = &boot_files {
        inherited.extend([kernel.as_raw_fd(), initrd.as_raw_fd()]);
    }
    let mut args: Vec<String> = vec![
        "-M".into(),
        "microvm,isa-serial=on".into(),
        "-accel".into(),
        match config.accel {
            // A bounded translation cache, so the VMM's cgroup limit can be (see cgroup::TCG_CODE_CACHE_MIB).
            Accel::Tcg => format!("tcg,tb-size={}", super::cgroup::TCG_CODE_CACHE_MIB),
            Accel::Kvm => config.accel.as_str().into(),
        },
        "-cpu".into(),
        match config.accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
        "-m".into(),
        format!("{}M", config.memory_mib),
        "-smp".into(),
        config.cpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        "-kernel".into(),
        kernel_arg,
        "-initrd".into(),
        initrd_arg,
        "-append".into(),
        // panic=-1: a guest kernel panic reboots at once, which -no-reboot turns into QEMU's exit.
        // airlock_guest=1: a parameter the kernel does not know and without a dot goes to init's environment,
        // which is how airlock knows it is the guest's init (`guest::is_guest_init`).
        format!(
            "console=ttyS0 {} panic=-1 rdinit=/init {GUEST_MARKER}{}",
            if kept_console { "" } else { "quiet" },
            match config.accel {
                Accel::Tcg => tsc_khz().map(|khz| format!(" tsc_early_khz={khz}")).unwrap_or_default(),
                Accel::Kvm => String::new(),
            }
        ),
        "-chardev".into(),
        format!("file,id=console,path=/proc/self/fd/{console_fd}"),
        "-serial".into(),
        "chardev:console".into(),
        "-device".into(),
        "virtio-serial-device,id=ports".into(),
        // The guest reports the pages it frees (the unpacked initramfs, a finished build's) and QEMU gives
        // them back to the host: an idle guest holds what it uses, not the most it ever touched.
        "-device".into(),
        "virtio-balloon-device,free-page-reporting=on".into(),
    ];
    for (id, fd, name) in [
        ("ctl", ctl_qemu.as_raw_fd(), PORT_CONTROL),
        ("stdin", stdin_qemu.as_raw_fd(), PORT_STDIN),
        ("stdout", stdout_qemu.as_raw_fd(), PORT_STDOUT),
        ("stderr", stderr_qemu.as_raw_fd(), PORT_STDERR),
    ] {
        args.extend(["-chardev".into(), format!("socket,id={id},fd={fd}")]);
        args.extend(["-device".into(), format!("virtserialport,bus=ports.0,chardev={id},name={name}")]);
    }
    // Root's QEMU keeps the files' owners as the guest sets them (passthrough); a user's cannot chown, and
    // stores files as its own (none).
    let model = if as_root && drop_to.is_none() { "passthrough" } else { "none" };
    for (i, share) in launch.request.shares.iter().enumerate() {
        let readonly = if share.readonly { ",readonly=on" } else { "" };
        // A staging directory with an overlay mounted below it (see `super::WorkspaceOverlay`): two devices in
        // one export, whose inode numbers are kept apart (`remap`), so that after the overlay is replaced none of
        // its files passes for one of the old overlay's in the guest.
        let (path, multidevs) = match &share.export {
            Some(export) => (export.dir.as_str(), ",multidevs=remap"),
            None => (share.path.as_str(), ""),
        };
        args.extend([
            "-fsdev".into(),
            format!("local,id=fs{i},path={},security_model={model}{readonly}{multidevs}", escape(path)),
        ]);
        args.extend(["-device".into(), format!("virtio-9p-device,fsdev=fs{i},mount_tag={}", share.tag)]);
    }
    if let Some(fd) = launch.nic {
        inherited.push(fd);
        args.extend(super::net::qemu_args(fd));
    }

    let overlay = match &launch.mounts.workspace {
        Some(o) => {
            let lower: Vec<String> = o.lower.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            let options = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                lower.join(":"),
                o.upper.to_string_lossy(),
                o.work.to_string_lossy()
            );
            Some((
                {
                    let at = o.mount_point().to_string_lossy().into_owned();
                    CString::new(at.clone()).map_err(|_| QemuError::Nul(at))?
                },
                CString::new(options.clone()).map_err(|_| QemuError::Nul(options))?,
            ))
        }
        None => None,
    };

    // Host root's QEMU gives up what a 9p passthrough share does not need (see RootGuard); a user's QEMU has
    // nothing to give up and stores the files as its own.
    let root_guard = if as_root { Some(RootGuard::new()?) } else { None };
    // Bound files: (the host file, its placeholder, the flags of a read-only remount or none), as C strings made
    // before the fork. A read-only remount keeps the flags of the file's own mount (a user's namespace may not
    // drop a locked `nosuid`, `nodev` or `noexec`).
    let file_binds: Vec<(CString, CString, Option<libc::c_ulong>)> = match &launch.mounts.files {
        Some(f) => f
            .binds
            .iter()
            .map(|(source, placeholder, readonly)| {
                let c = |p: &Path| {
                    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| QemuError::Nul(p.display().to_string()))
                };
                let source = c(source)?;
                let remount = match readonly {
                    true => {
                        let st = sys::fs::statvfs(&source).map_err(|e| QemuError::BindFile {
                            path: source.to_string_lossy().into_owned(),
                            source: os_error(e),
                        })?;
                        let mut flags =
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
                        if st.f_flag & libc::ST_NOEXEC != 0 {
                            flags |= libc::MS_NOEXEC;
                        }
                        Some(flags)
                    }
                    false => None,
                };
                Ok((source, c(placeholder)?, remount))
            })
            .collect::<Result<_, QemuError>>()?,
        None => Vec::new(),
    };
    // The root overlay's layers, idmapped into the sandbox's host id range (see `super::GuestIdRange`), as C
    // strings made before the fork, with the user namespace whose maps they take.
    let idmapped_layers: Vec<CString> = match &launch.mounts.ids {
        Some(ids) => ids
            .layers
            .iter()
            .map(|p| {
                CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| QemuError::Nul(p.display().to_string()))
            })
            .collect::<Result<_, QemuError>>()?,
        None => Vec::new(),
    };
    let layers_userns = launch.mounts.ids.as_ref().and_then(|ids| ids.userns.as_ref()).map(|fd| fd.as_raw_fd());
    let own_mounts = overlay.is_some() || !file_binds.is_empty() || !idmapped_layers.is_empty();
    // A user's QEMU with mounts of its own: a user namespace of its own, its ids mapped to themselves (written
    // by the child itself, so made now: nothing may allocate after the fork).
    let user_maps = match (own_mounts, as_root) {
        (true, false) => {
            let (uid, gid) = sys::process::effective_ids();
            Some((format!("{uid} {uid} 1\n"), format!("{gid} {gid} 1\n")))
        }
        _ => None,
    };
    let log_for_qemu = console.try_clone().map_err(QemuError::Channels)?;
    let mut command = Command::new(&program);
    command.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log_for_qemu));
    let parent = sys::process::pid();
    let cgroup_join: Option<Vec<CString>> = launch.cgroup_join.map(<[CString]>::to_vec);
    sys::process::run_before_exec(&mut command, move || {
        // Async-signal-safe only (this crate's calls on values made before the fork).
        sys::process::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map_err(os_error)?;
        // airlock died before the line above: PDEATHSIG would never fire.
        if sys::process::parent_pid() != parent {
            return Err(os_error(libc::ESRCH));
        }
        // First: everything QEMU does from here on is charged to its cgroup.
        if let Some(files) = &cgroup_join {
            super::cgroup::join_in_child(files).map_err(os_error)?;
        }
        if own_mounts {
            // Rootless: the user namespace first, which gives this process the right to mount in a mount
            // namespace it then owns. Its ids map to themselves, not to 0: the execve below leaves QEMU no
            // capability in it, so it is the user it was, in a mount namespace with one more mount.
            if let Some((uid_map, gid_map)) = &user_maps {
                sys::namespace::unshare(libc::CLONE_NEWUSER).map_err(os_error)?;
                for (file, contents) in [
                    (c"/proc/self/setgroups", "deny"),
                    (c"/proc/self/uid_map", uid_map),
                    (c"/proc/self/gid_map", gid_map),
                ] {
                    let fd = sys::fd::open(file, libc::O_WRONLY | libc::O_CLOEXEC).map_err(os_error)?;
                    sys::fd::write(fd.as_raw_fd(), contents.as_bytes()).map_err(os_error)?;
                }
            }
            // QEMU's own mount namespace, private: what is mounted here is on no other mount table and goes
            // with QEMU.
            sys::namespace::unshare(libc::CLONE_NEWNS).map_err(os_error)?;
            sys::mount::make_all_private().map_err(os_error)?;
        }
        // Each layer over itself, idmapped (host root's QEMU only: `guest_id_range`), before QEMU opens its exports.
        if let Some(userns) = layers_userns {
            for layer in &idmapped_layers {
                runtime::rootfs::idmap_over_itself(layer, userns).map_err(os_error)?;
            }
        }
        if let Some((workspace, options)) = &overlay {
            sys::mount::mount(Some(c"overlay"), workspace, Some(c"overlay"), libc::MS_NODEV, Some(options))
                .map_err(os_error)?;
        }
        for (source, placeholder, remount) in &file_binds {
            sys::mount::mount(Some(source), placeholder, None, libc::MS_BIND, None).map_err(os_error)?;
            if let Some(flags) = remount {
                sys::mount::mount(None, placeholder, None, *flags, None).map_err(os_error)?;
            }
        }
        for &fd in &inherited {
            sys::fd::set_descriptor_flags(fd, 0).map_err(os_error)?;
        }
        // Last: the overlay mount above needs CAP_SYS_ADMIN, which this drops.
        if let Some(guard) = &root_guard {
            guard.apply_in_child().map_err(os_error)?;
        }
        if let Some(user) = &drop_to {
            user.become_in_child(parent).map_err(os_error)?;
        }
        Ok(())
    });
    let child =
        command.spawn().map_err(|source| QemuError::Spawn { program: program.display().to_string(), source })?;
    drop((ctl_qemu, stdin_qemu, stdout_qemu, stderr_qemu));
    Ok(Spawned { child, channels: Channels { ctl, stdin, stdout, stderr }, console })
}

/// Who host root's QEMU becomes when it serves the host's own system directories (`--rootfs host`): the owner
/// of the writable shares when they have one that is not root (the sandbox's root is that owner inside, as on a
/// host), else `nobody`. Root's QEMU would read every file of `/etc` and `/usr` for the guest (`/etc/shadow`,
/// host keys), and a guest whose root escaped the engine inside could ask it to: as this user it reads what that
/// user can, as a namespace sandbox's root can. No capability is left (root's set is cleared by the change of
/// user), the 9p shares run with `security_model=none` (what the guest writes is this user's, as for a user's
/// QEMU), and the `RootGuard` is applied first all the same.
struct UnprivilegedQemu {
    uid: u32,
    gid: u32,
    /// `/dev/kvm`'s group, for KVM (the device is usually `root:kvm`, 0660).
    groups: Vec<u32>,
}

/// `nobody` and `nogroup` on Debian (the overflow ids).
const NOBODY: u32 = 65534;

impl UnprivilegedQemu {
    fn for_shares(shares: &[super::protocol::Share], accel: Accel) -> Result<UnprivilegedQemu, QemuError> {
        let mut owner: Option<(u32, u32)> = None;
        for share in shares.iter().filter(|s| !s.readonly) {
            // What QEMU serves: a staging directory is given the workspace's owner.
            let path = share.export.as_ref().map_or(&share.path, |e| &e.dir);
            let meta = std::fs::metadata(path).map_err(|source| QemuError::PrepareUnprivileged {
                what: format!("find the owner of {path}"),
                source,
            })?;
            match owner {
                None if meta.uid() != 0 => owner = Some((meta.uid(), meta.gid())),
                // Several owners, or root: the guest's engine makes none of them the sandbox's root.
                Some((uid, _)) if uid != meta.uid() => return Ok(UnprivilegedQemu::nobody(accel)),
                None => return Ok(UnprivilegedQemu::nobody(accel)),
                Some(_) => {}
            }
        }
        let (uid, gid) = owner.unwrap_or((NOBODY, NOBODY));
        Ok(UnprivilegedQemu { uid, gid, groups: kvm_group(accel) })
    }

    fn nobody(accel: Accel) -> UnprivilegedQemu {
        UnprivilegedQemu { uid: NOBODY, gid: NOBODY, groups: kvm_group(accel) }
    }

    /// In the forked child, last before `execve`: the groups, gid and uid (which clears every capability), then
    /// the parent-death signal again (a change of credentials clears it) and its race with the parent's death.
    fn become_in_child(&self, parent: libc::pid_t) -> Result<(), i32> {
        // Raw system calls: glibc's wrappers signal every thread it knows of, which a forked child must not.
        sys::credentials::set_thread_groups_raw(&self.groups)?;
        sys::credentials::set_thread_ids_raw(self.uid, self.gid)?;
        sys::process::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)?;
        if sys::process::parent_pid() != parent {
            return Err(libc::ESRCH);
        }
        Ok(())
    }
}

fn kvm_group(accel: Accel) -> Vec<u32> {
    match accel {
        Accel::Kvm => std::fs::metadata("/dev/kvm").map(|m| vec![m.gid()]).unwrap_or_default(),
        Accel::Tcg => Vec::new(),
    }
}

/// The host's TSC frequency in kHz (`cpu MHz` of `/proc/cpuinfo`). Under TCG the guest's TSC runs at the
/// host's, and a microvm has no HPET nor ACPI PM timer to calibrate it against: on a busy host the PIT
/// calibration fails and the guest kernel hangs in early boot ("tsc: Marking TSC unstable"). Told the
/// frequency (`tsc_early_khz`), it calibrates nothing.
fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64).filter(|khz| *khz > 0)
}

fn os_error(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

/// The console's log: an unlinked file (nothing to clean up, whoever dies first), which QEMU opens again by its
/// `/proc/self/fd` link.
fn console_log(kept: Option<&Path>) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(path) = kept {
        return std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(std::env::temp_dir())
}

/// The console log's last non-empty line (what a failed boot said last).
pub(super) fn console_tail(console: &std::fs::File) -> String {
    let mut text = String::new();
    let mut file = console;
    let _ = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    text.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("(the console is empty)").to_string()
}

/// The host's ends of the guest's serial ports.
pub(super) struct Channels {
    pub ctl: UnixStream,
    pub stdin: UnixStream,
    pub stdout: UnixStream,
    pub stderr: UnixStream,
}

/// Sends the request, relays the streams and hands the audit records to `audit` until the guest reports the
/// outcome.
fn converse(
    channels: Channels,
    pidfd: &std::os::fd::OwnedFd,
    request: &GuestRequest,
    warn: &mut dyn FnMut(&str),
    mut audit: Option<&mut dyn runtime::notify::AuditSink>,
    console: &std::fs::File,
) -> Result<RunOutcome, QemuError> {
    let Channels { mut ctl, stdin, mut stdout, mut stderr } = channels;
    let mut line = serde_json::to_vec(request).map_err(|e| QemuError::Channels(std::io::Error::other(e)))?;
    line.push(b'\n');
    ctl.write_all(&line).map_err(QemuError::Channels)?;
    // `-t`: the caller's resizes go to the guest (`guest::feed_terminal`). SIGWINCH blocked before the input
    // thread starts (it inherits the mask), so that the signal waits for the signalfd rather than being ignored.
    let resizes = match request.tty {
        Some(_) => Some(super::held::BlockedSignals::only(&[libc::SIGWINCH]).map_err(QemuError::Channels)?),
        None => None,
    };

    // The caller's standard input, copied by a thread of its own (a read of a terminal blocks); at its end the
    // socket is shut for writing, which QEMU reads (after the data) as the end, and closes the port: the guest
    // reads the end of input. Not closed: QEMU drops a hung-up socket's unread data. Left behind when the command
    // ends first.
    let stdin_kept = stdin.try_clone().map_err(QemuError::Channels)?;
    std::thread::spawn(move || {
        let mut stdin = stdin;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut stdin);
        let _ = stdin.shutdown(std::net::Shutdown::Write);
    });
    let _keep_stdin_open = stdin_kept;

    let started = Instant::now();
    let mut up = false;
    let mut reader = ControlReader::default();
    let mut out_open = true;
    let mut err_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: ctl.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if out_open { stdout.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: if err_open { stderr.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: pidfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: resizes.as_ref().map_or(-1, |r| r.fd.as_raw_fd()), events: libc::POLLIN, revents: 0 },
        ];
        // A buffering sink wants its flush within its delay, even while the guest is quiet.
        let flush_in = audit.as_deref().and_then(|a| a.flush_due()).map_or(100, |d| d.as_millis().min(100) as i32);
        match sys::fd::poll(&mut fds, flush_in) {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => return Err(QemuError::Channels(os_error(e))),
        }
        if fds[4].revents != 0 {
            let resized = resizes.as_ref().and_then(|r| sys::signal::read_signal(r.fd.as_raw_fd()));
            if let (Some(_), Ok(size)) = (resized, sys::terminal::window_size(std::io::stdin().as_fd())) {
                let resize = super::held::HostMessage::Resize { session: 0, rows: size.ws_row, cols: size.ws_col };
                if let Ok(mut line) = serde_json::to_vec(&resize) {
                    line.push(b'\n');
                    // The guest reads its port at once; a resize it misses is not worth failing the run over.
                    let _ = ctl.write_all(&line);
                }
            }
        }
        if fds[1].revents != 0 {
            out_open = relay(&mut stdout, &mut std::io::stdout(), &mut buf);
        }
        if fds[2].revents != 0 {
            err_open = relay(&mut stderr, &mut std::io::stderr(), &mut buf);
        }
        if fds[0].revents != 0 {
            let n = ctl.read(&mut buf).unwrap_or(0);
            reader.push(&buf[..n]);
            while let Some(message) = reader.next_message()? {
                let outcome = match message {
                    GuestMessage::Audit(record) => {
                        let event = record.into_event().map_err(QemuError::BadAuditRecord)?;
                        // Not asked for: nothing was audited, so nothing may be recorded (a guest cannot write
                        // into a run's log that has none).
                        let Some(sink) = audit.as_deref_mut() else {
                            return Err(QemuError::BadMessage("an audit record, but the run has no audit".into()));
                        };
                        sink.record(event);
                        continue;
                    }
                    GuestMessage::Started => {
                        up = true;
                        continue;
                    }
                    GuestMessage::Warning(w) => {
                        warn(&w);
                        continue;
                    }
                    GuestMessage::Failed(why) => return Err(QemuError::Guest(why)),
                    GuestMessage::Exited(code) => RunOutcome::Exited(code),
                    GuestMessage::TimedOut { millis } => RunOutcome::TimedOut(Duration::from_millis(millis)),
                    GuestMessage::ExecFailed { code, message } => RunOutcome::ExecFailed { code, message },
                    GuestMessage::OutOfMemory { summary } => RunOutcome::OutOfMemory { summary },
                    // A held guest's: not a run's.
                    other @ (GuestMessage::Of { .. } | GuestMessage::InputTaken { .. }) => {
                        return Err(QemuError::BadMessage(format!("{other:?} from a run's guest")));
                    }
                };
                // The command's output is already in the sockets (a guest's write to a port returns once QEMU
                // has passed it on): drained before the outcome is returned.
                drain(&mut stdout, &mut std::io::stdout(), &mut buf);
                drain(&mut stderr, &mut std::io::stderr(), &mut buf);
                return Ok(outcome);
            }
            if n == 0 {
                return Err(stopped(up, console));
            }
        }
        if let Some(sink) = audit.as_deref_mut() {
            if sink.flush_due() == Some(Duration::ZERO) {
                sink.flush();
            }
        }
        if fds[3].revents != 0 {
            return Err(stopped(up, console));
        }
        if !up && started.elapsed() > START_TIMEOUT {
            return Err(QemuError::DidNotStart(format!(
                "no answer after {}s; the console's last line: {}",
                START_TIMEOUT.as_secs(),
                console_tail(console)
            )));
        }
    }
}

fn stopped(up: bool, console: &std::fs::File) -> QemuError {
    let tail = console_tail(console);
    if up {
        QemuError::Died(tail)
    } else {
        QemuError::DidNotStart(tail)
    }
}

/// Copies what is there from `from` to `to`; false once `from` is at its end.
pub(super) fn relay(from: &mut UnixStream, to: &mut dyn Write, buf: &mut [u8]) -> bool {
    match from.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            let _ = to.write_all(&buf[..n]).and_then(|()| to.flush());
            true
        }
        Err(e) => e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Everything `from` holds now, without waiting.
pub(super) fn drain(from: &mut UnixStream, to: &mut dyn Write, buf: &mut [u8]) {
    if from.set_nonblocking(true).is_err() {
        return;
    }
    while relay(from, to, buf) {
        let mut probe = [libc::pollfd { fd: from.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        if !matches!(sys::fd::poll(&mut probe, 0), Ok(n) if n > 0) {
            break;
        }
    }
}
