//! The VMM's host cgroup: when the policy asks for limits (`--memory`, `--cpus`, `--pids`), QEMU itself runs in a
//! host cgroup of its own, made by the namespace backend's code (`runtime::sandbox::create_limits_cgroup`: v1 or
//! v2, the same delegation, refusal and best-effort rules, the same sweep of cgroups whose owner died). The
//! guest's engine applies the asked limits to the command inside the guest; this cgroup bounds what the whole VM
//! can take from the host, so a guest that escapes its own engine still cannot.
//!
//! The limits are the VM's, not the command's: memory = the guest's RAM + [`vmm_overhead_mib`], CPU quota =
//! `--cpus` (the guest gets that many vCPUs, rounded up), pids = [`VMM_PIDS`] (QEMU's threads).
//!
//! QEMU joins the cgroup in its forked child before it is executed (`0` written to each `tasks` file on v1,
//! to `cgroup.procs` on v2: the writer moves itself), so everything QEMU allocates is charged from its first page.
//! The cgroup is removed when QEMU has been reaped; a killed airlock's is removed by the next run's sweep (its
//! name records the owner, airlock, and QEMU dies with airlock).

use std::ffi::CString;

use policy::sandbox::{Limits, SandboxPolicy};
use runtime::cgroups::{CgroupEntryPoint, SandboxCgroup};

use super::kernel::Accel;
use super::VmConfig;

/// The TCG translation cache's size (`-accel tcg,tb-size=`), MiB. QEMU 7's default reserves 1 GiB and fills it
/// as the guest runs new code (80 MiB after a boot and a Python start): bounded, so the cgroup's limit can be.
pub const TCG_CODE_CACHE_MIB: u64 = 128;

/// QEMU's own memory besides the guest's RAM and the translation cache, MiB: its heap, libraries, the mapped
/// initramfs (21 MiB), device buffers. Measured: 96 MiB RSS (a 512 MiB guest with all its RAM touched under TCG
/// used 688 MiB: 512 + 80 of code cache + 96); this leaves room for 9p's buffers and host page cache charged
/// to QEMU (reclaimed before the limit is hit).
pub const VMM_BASE_OVERHEAD_MIB: u64 = 128;

/// Processes and threads the VMM's cgroup allows: QEMU's main loop, one thread per vCPU, RCU and the I/O
/// thread pool (at most 64 workers, which 9p uses), with room.
pub const VMM_PIDS: u64 = 128;

/// What QEMU takes over the guest's RAM.
pub fn vmm_overhead_mib(accel: Accel) -> u64 {
    match accel {
        Accel::Tcg => VMM_BASE_OVERHEAD_MIB + TCG_CODE_CACHE_MIB,
        Accel::Kvm => VMM_BASE_OVERHEAD_MIB,
    }
}

/// The limits of the VMM's cgroup for a VM of `config`'s size.
pub fn vmm_limits(asked: &Limits, config: &VmConfig) -> Limits {
    Limits {
        memory_bytes: Some((config.memory_mib + vmm_overhead_mib(config.accel)) << 20),
        pids: Some(VMM_PIDS),
        cpus: asked.cpus,
        ..Limits::default()
    }
}

/// QEMU's host cgroup, and the files its child writes `0` to.
#[derive(Debug)]
pub struct VmmCgroup {
    cgroup: SandboxCgroup,
    join: Vec<CString>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmCgroupError {
    #[error("vm: cannot put QEMU in a host cgroup for the asked limits")]
    Create(#[source] runtime::cgroups::CgroupError),
    #[error("vm: a cgroup path with a NUL byte: {0}")]
    Nul(String),
    #[error(
        "vm: QEMU was killed by its host cgroup's memory limit ({summary}; the guest died with it): QEMU needed \
         more than its measured overhead over the guest's RAM"
    )]
    VmmOutOfMemory {
        summary: String,
        #[source]
        died: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("vm: cannot remove QEMU's host cgroup")]
    Remove(#[source] runtime::cgroups::CgroupError),
}

impl VmmCgroup {
    /// QEMU's cgroup when `policy` asks for limits (`None` when it asks none, or best-effort could not make it).
    pub fn create(
        policy: &SandboxPolicy,
        config: &VmConfig,
        name: &str,
        warn: &mut dyn FnMut(&str),
    ) -> Result<Option<VmmCgroup>, VmmCgroupError> {
        let limits = vmm_limits(&policy.limits, config);
        let cgroup = runtime::sandbox::create_limits_cgroup(
            &policy.limits,
            &limits,
            policy.limits_enforcement,
            &format!("vmm-{name}"),
            warn,
        )
        .map_err(VmmCgroupError::Create)?;
        let Some(cgroup) = cgroup else { return Ok(None) };
        let files = match cgroup.entry() {
            CgroupEntryPoint::SelfAttach(tasks) => tasks,
            CgroupEntryPoint::CloneInto(dir) => vec![dir.join("cgroup.procs")],
        };
        let join = files
            .iter()
            .map(|f| {
                CString::new(f.as_os_str().as_encoded_bytes()).map_err(|_| VmmCgroupError::Nul(f.display().to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(VmmCgroup { cgroup, join }))
    }

    /// The files QEMU's child writes `0` to, before it is executed (see [`join_in_child`]).
    pub fn join_files(&self) -> &[CString] {
        &self.join
    }

    /// `error` (the guest stopped) explained by the host cgroup's OOM killer, when it killed QEMU.
    pub fn explain(&self, error: super::qemu::QemuError) -> super::VmError {
        match self.cgroup.stats() {
            Ok(stats) if stats.oom_killed() => {
                VmmCgroupError::VmmOutOfMemory { summary: stats.memory_summary(), died: Box::new(error) }.into()
            }
            _ => error.into(),
        }
    }

    /// Removes the cgroup (after QEMU was reaped: nothing is left to kill).
    pub fn remove(self) -> Result<(), VmmCgroupError> {
        self.cgroup.remove().map_err(VmmCgroupError::Remove)
    }
}

/// In QEMU's forked child: moves it into the cgroup. Async-signal-safe: open, write and close of paths made
/// before the fork.
pub fn join_in_child(files: &[CString]) -> Result<(), i32> {
    for file in files {
        let fd = sys::fd::open(file, libc::O_WRONLY | libc::O_CLOEXEC)?;
        sys::fd::write_all(std::os::fd::AsRawFd::as_raw_fd(&fd), b"0")?;
    }
    Ok(())
}
