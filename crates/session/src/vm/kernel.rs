//! The guest kernel and the accelerator QEMU runs it with.

use std::path::{Path, PathBuf};

/// A kernel image and the directory of its modules (`/lib/modules/VERSION`).
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub image: PathBuf,
    pub version: String,
    pub modules_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "no guest kernel: no /boot/vmlinuz-VERSION with its modules in /lib/modules/VERSION (install one: apt-get \
         install linux-image-amd64; or name one with AIRLOCK_VM_KERNEL=PATH)"
    )]
    NoneFound,
    #[error("the guest kernel {path} does not exist or is not a file (AIRLOCK_VM_KERNEL)")]
    Missing { path: PathBuf },
    #[error(
        "the guest kernel {path}'s modules are not in {modules} (airlock takes the version from the file name \
         vmlinuz-VERSION)"
    )]
    NoModules { path: PathBuf, modules: PathBuf },
}

impl GuestKernel {
    /// `AIRLOCK_VM_KERNEL`'s kernel, else the newest `/boot/vmlinuz-*` that has its modules.
    pub fn find(chosen: Option<&Path>) -> Result<GuestKernel, KernelError> {
        match chosen {
            Some(path) => GuestKernel::at(path),
            None => newest_in(Path::new("/boot"), Path::new("/lib/modules")).ok_or(KernelError::NoneFound),
        }
    }

    fn at(path: &Path) -> Result<GuestKernel, KernelError> {
        if !path.is_file() {
            return Err(KernelError::Missing { path: path.to_path_buf() });
        }
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let version = file.strip_prefix("vmlinuz-").unwrap_or(file).to_string();
        let modules_dir = Path::new("/lib/modules").join(&version);
        if !modules_dir.join("modules.dep").is_file() {
            return Err(KernelError::NoModules { path: path.to_path_buf(), modules: modules_dir });
        }
        Ok(GuestKernel { image: path.to_path_buf(), version, modules_dir })
    }

    /// Whether the kernel was built to run as a PVM guest (`CONFIG_PVM_GUEST=y` in its `/boot/config-VERSION`).
    pub fn is_pvm_guest(&self) -> bool {
        let config = self.image.with_file_name(format!("config-{}", self.version));
        std::fs::read_to_string(config).is_ok_and(|text| text.lines().any(|l| l.trim() == "CONFIG_PVM_GUEST=y"))
    }
}

fn newest_in(boot: &Path, modules: &Path) -> Option<GuestKernel> {
    let mut found: Vec<GuestKernel> = std::fs::read_dir(boot)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            let modules_dir = modules.join(&version);
            modules_dir.join("modules.dep").is_file().then(|| GuestKernel { image: entry.path(), version, modules_dir })
        })
        .collect();
    found.sort_by(|a, b| compare_versions(&a.version, &b.version));
    found.pop()
}

/// Kernel versions compared number by number (`6.1.0-57` after `6.1.0-9`).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let numbers = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
    };
    numbers(a).cmp(&numbers(b))
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// The host's KVM: hardware virtualization (the default).
    Kvm,
    /// QEMU's emulator: no KVM needed, much slower; still a kernel of the guest's own.
    Tcg,
}

impl Accel {
    pub fn parse(text: &str) -> Option<Accel> {
        match text {
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What this host's KVM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmFlavour {
    /// Hardware virtualization (vmx or svm): any guest kernel runs.
    Hardware,
    /// PVM (`kvm_pvm`, no vmx/svm, e.g. inside a cloud VM without nested virtualization): only kernels built with
    /// `CONFIG_PVM_GUEST` run; others hang early in boot.
    Pvm,
    /// No usable `/dev/kvm`: why.
    Unusable(String),
}

/// This host's KVM, as QEMU would use it.
pub fn kvm_flavour() -> KvmFlavour {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return KvmFlavour::Unusable(format!("cannot open /dev/kvm: {e}"));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hardware && Path::new("/sys/module/kvm_pvm").exists() {
        return KvmFlavour::Pvm;
    }
    KvmFlavour::Hardware
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(compare_versions("6.1.0-57-amd64", "6.1.0-9-amd64"), std::cmp::Ordering::Greater);
        assert_eq!(compare_versions("5.10.0-1", "6.1.0-1"), std::cmp::Ordering::Less);
    }
}
