//! The guest's initramfs: `/init` (this airlock executable, which enters guest-agent mode as PID 1, see
//! `super::guest`) and the kernel modules the guest needs to reach its devices, nothing else. Built once per
//! (airlock executable, guest kernel) and cached, written atomically (a temporary file renamed into place).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::kernel::GuestKernel;

/// The modules the guest agent needs, by name: the virtio transport, the serial ports (its channel to the host),
/// 9p over virtio (the shares), overlayfs (the engine's writable layers), virtio-net (`--net allow`'s NIC), the
/// balloon (free page reporting). Their dependencies come from `modules.dep`.
pub const GUEST_MODULES: &[&str] =
    &["virtio_mmio", "virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay", "virtio_net", "virtio_balloon"];

/// Where the modules are in the initramfs, and the file listing them in load order (dependencies first).
pub const MODULES_DIR: &str = "modules";
pub const MODULES_ORDER: &str = "modules/order";

/// Bumped when the initramfs's layout changes, so an old cached one is not used.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the initramfs {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest kernel's module {name} is not in {dep} (is it built in, or the modules of another kernel?)")]
    ModuleMissing { name: String, dep: PathBuf },
    #[error("{path} is not an ELF executable airlock can run as the guest's init")]
    NotElf { path: PathBuf },
}

/// The initramfs for `kernel`, built now unless the cache holds it. `cache_dir` is airlock's cache.
pub fn ensure(cache_dir: &Path, kernel: &GuestKernel) -> Result<PathBuf, InitramfsError> {
    let exe = PathBuf::from("/proc/self/exe");
    let meta = std::fs::metadata(&exe).map_err(|source| InitramfsError::Read { path: exe.clone(), source })?;
    // The executable's identity: device, inode, size and modification time (a rebuilt or upgraded airlock
    // differs in at least one), hashed with the kernel's version and the layout's version.
    use std::os::unix::fs::MetadataExt;
    let key = format!(
        "{FORMAT}:{}:{}:{}:{}.{}:{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        kernel.version
    );
    let digest = cache_key_hex(key.as_bytes());
    let path = cache_dir.join(format!("initramfs-{}-{}.cpio", kernel.version, &digest[..16]));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache_dir)
        .map_err(|source| InitramfsError::Write { path: cache_dir.to_path_buf(), source })?;
    let modules = module_closure(&kernel.modules_dir)?;
    let init = load_image(&exe)?;

    let tmp = cache_dir.join(format!(".initramfs-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut cpio = CpioWriter::new(std::io::BufWriter::new(file));
        cpio.dir("dev")?;
        // The kernel opens /dev/console for init's standard streams: without it init would start with none.
        cpio.char_device("dev/console", 5, 1)?;
        cpio.dir("proc")?;
        cpio.dir("sys")?;
        cpio.dir("newroot")?;
        cpio.dir(MODULES_DIR)?;
        let mut order = String::new();
        for module in &modules {
            let data = std::fs::read(kernel.modules_dir.join(&module.path))?;
            let file_name = format!("{}.ko", module.name);
            cpio.file(&format!("{MODULES_DIR}/{file_name}"), 0o644, &data)?;
            order.push_str(&file_name);
            order.push('\n');
        }
        cpio.file(MODULES_ORDER, 0o644, order.as_bytes())?;
        cpio.file("init", 0o755, &init)?;
        let mut out = cpio.finish()?;
        out.flush()?;
        out.get_ref().sync_all()?;
        drop(out);
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        InitramfsError::Write { path: path.clone(), source }
    })?;
    // Another airlock build's images (50 MB each for a debug build) go: a running guest keeps its own open.
    if let Ok(entries) = std::fs::read_dir(cache_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("initramfs-") && name.ends_with(".cpio") && entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(path)
}

fn cache_key_hex(data: &[u8]) -> String {
    // A stable, dependency-free hash is enough here (a cache key, not a security boundary): FNV-1a 64 twice,
    // with two offsets, for 32 hex digits.
    let fnv = |seed: u64| data.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4))
}

/// One module to load: its name and its path under the kernel's modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: String,
}

/// [`GUEST_MODULES`] and their dependencies from `modules.dep`, in load order (each after what it needs).
pub fn module_closure(modules_dir: &Path) -> Result<Vec<Module>, InitramfsError> {
    let dep_path = modules_dir.join("modules.dep");
    let text =
        std::fs::read_to_string(&dep_path).map_err(|source| InitramfsError::Read { path: dep_path.clone(), source })?;
    let deps = parse_modules_dep(&text);
    let mut ordered = Vec::new();
    let mut seen = BTreeSet::new();
    for name in GUEST_MODULES {
        let Some(path) = deps.keys().find(|p| module_name(p) == *name) else {
            return Err(InitramfsError::ModuleMissing { name: name.to_string(), dep: dep_path });
        };
        visit(path, &deps, &mut seen, &mut ordered);
    }
    Ok(ordered)
}

fn visit(
    path: &str,
    deps: &std::collections::BTreeMap<String, Vec<String>>,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Module>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, out);
    }
    out.push(Module { name: module_name(path), path: path.to_string() });
}

/// `kernel/fs/9p/9p.ko` → `9p` (dashes as underscores, as the kernel names modules).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep`: `path: dep dep ...` per line.
fn parse_modules_dep(text: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((module.trim().to_string(), deps.split_whitespace().map(str::to_string).collect()))
        })
        .collect()
}

/// The part of the ELF executable at `path` the kernel loads: everything up to the end of its last loadable
/// segment, with the section header table (past that end: debug information, symbols) cut off and the ELF
/// header no longer pointing to it. A debug build's 280 MB become ~50 MB; the kernel's loader reads program
/// headers only.
pub fn load_image(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    let mut data = std::fs::read(path).map_err(|source| InitramfsError::Read { path: path.to_path_buf(), source })?;
    let not_elf = || InitramfsError::NotElf { path: path.to_path_buf() };
    let u16_at = |d: &[u8], at: usize| d.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |d: &[u8], at: usize| d.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |d: &[u8], at: usize| d.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    // 64-bit little-endian ELF only (x86_64, aarch64).
    if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(not_elf());
    }
    let phoff = u64_at(&data, 0x20).ok_or_else(not_elf)? as usize;
    let phentsize = usize::from(u16_at(&data, 0x36).ok_or_else(not_elf)?);
    let phnum = usize::from(u16_at(&data, 0x38).ok_or_else(not_elf)?);
    let mut end = 0usize;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32_at(&data, at).ok_or_else(not_elf)?;
        let offset = u64_at(&data, at + 8).ok_or_else(not_elf)?;
        let size = u64_at(&data, at + 32).ok_or_else(not_elf)?;
        if kind != 0 {
            end = end.max(usize::try_from(offset.saturating_add(size)).map_err(|_| not_elf())?);
        }
    }
    if end == 0 || end > data.len() {
        return Err(not_elf());
    }
    let shoff = u64_at(&data, 0x28).ok_or_else(not_elf)?;
    if usize::try_from(shoff).map_or(true, |s| s >= end) {
        data.truncate(end);
        // e_shoff, e_shnum, e_shstrndx: no section headers.
        data[0x28..0x30].fill(0);
        data[0x3c..0x40].fill(0);
    }
    Ok(data)
}

/// A `newc` cpio archive (what the kernel unpacks as an initramfs).
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: usize,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter { out, ino: 1, written: 0 }
    }

    pub fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, libc::S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, libc::S_IFREG | mode, 1, (0, 0), data)
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> std::io::Result<()> {
        self.entry(name, libc::S_IFCHR | 0o600, 1, (major, minor), &[])
    }

    /// The trailer; returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) -> std::io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| std::io::Error::from(std::io::ErrorKind::FileTooLarge))?;
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        self.ino += 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
        // check: 8 hex digits each.
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            0,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len();
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpio_entry_is_padded_to_four_bytes() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.file("a", 0o644, b"xyz").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        // 110-byte header + "a\0" = 112 (aligned), then 3 bytes of data + 1 of padding.
        assert_eq!(&out[112..116], b"xyz\0");
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn the_closure_puts_dependencies_first() {
        let deps = parse_modules_dep("kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n");
        let (mut seen, mut out) = (BTreeSet::new(), Vec::new());
        visit("kernel/a.ko", &deps, &mut seen, &mut out);
        let names: Vec<_> = out.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
    }
}
