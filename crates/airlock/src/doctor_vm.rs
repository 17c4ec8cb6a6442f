//! `airlock doctor`'s `vm` check: what `--isolation vm` needs here (QEMU, a usable KVM, a guest kernel with its
//! modules), and the fix for each part missing.

use probe::{Check, Status};
use session::vm::{kernel::kvm_flavour, qemu::qemu_program, GuestKernel, KvmFlavour};

pub fn vm_check() -> Check {
    const ID: &str = "vm";
    const NAME: &str = "VM isolation (--isolation vm)";
    let check = |status, detail: String, fix: Option<String>| Check { id: ID, name: NAME, status, detail, fix };
    let Some(qemu) = qemu_program() else {
        return check(
            Status::Missing,
            format!("no qemu-system-{} in PATH", std::env::consts::ARCH),
            Some("apt-get install qemu-system-x86 (Debian, Ubuntu)".into()),
        );
    };
    let chosen = std::env::var_os("AIRLOCK_VM_KERNEL").map(std::path::PathBuf::from);
    let kernel = match GuestKernel::find(chosen.as_deref()) {
        Ok(kernel) => kernel,
        Err(e) => {
            return check(
                Status::Missing,
                format!("{}; no guest kernel: {e}", qemu.display()),
                Some(
                    "apt-get install linux-image-amd64 (a kernel image and its modules), or set AIRLOCK_VM_KERNEL"
                        .into(),
                ),
            )
        }
    };
    let found = format!("{}, guest kernel {} ({})", qemu.display(), kernel.version, kernel.image.display());
    match kvm_flavour() {
        KvmFlavour::Hardware => check(Status::Ok, format!("{found}; KVM with hardware virtualization"), None),
        KvmFlavour::Pvm if kernel.is_pvm_guest() => {
            check(Status::Ok, format!("{found}; KVM is PVM and the kernel is a PVM guest"), None)
        }
        KvmFlavour::Pvm => check(
            Status::Warn,
            format!("{found}; KVM is PVM (kvm_pvm, no vmx/svm): only kernels built with CONFIG_PVM_GUEST boot under it"),
            Some(
                "a PVM guest kernel (AIRLOCK_VM_KERNEL or [vm] kernel), or emulate: AIRLOCK_VM_ACCEL=tcg or [vm] accel = \
                 \"tcg\" (slow; still a kernel of its own)"
                    .into(),
            ),
        ),
        KvmFlavour::Unusable(why) => check(
            Status::Warn,
            format!("{found}; KVM unusable: {why}"),
            Some(
                "load kvm_intel or kvm_amd and give your user access to /dev/kvm (group kvm), or emulate: \
                 AIRLOCK_VM_ACCEL=tcg (slow)"
                    .into(),
            ),
        ),
    }
}
