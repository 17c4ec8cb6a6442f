//! The disk-bounded copy-on-write layer (`--disk SIZE` with a `cow` workspace, host root only).
//!
//! The layer's directories (`upper/`, `work/`, `layers/`: checkpoints are renames, so all three must be on one
//! filesystem) live on an ext4 filesystem of SIZE held in a sparse image file beside the sandbox's state
//! (`layer.img`), attached to a loop device and mounted on the host at `layer/`. The sandbox's writes to its
//! workspace land there: when it is full the writer gets `ENOSPC`, and the host's own filesystem loses at most
//! SIZE (the image's blocks; it is created only when that much is free).
//!
//! The mount is an ordinary host mount (`nosuid`, `nodev`, `noexec`: nothing on the host ever runs or opens a
//! device from the layer; inside, the overlay mount is what decides whether its files execute, and it does).
//! After a reboot, or anything else that unmounts it, [`ensure_mounted`] mounts it again; `airlock rm` calls
//! [`unmount`] before it deletes the image. A user namespace cannot mount ext4 from a loop device, so rootless
//! this is refused ([`DiskError::NeedsRoot`]) rather than run unbounded.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use crate::loopdev::{self, LoopError};
use runtime::failure::{os_error, os_error_text};

/// The smallest image: ext4 with a journal needs a few megabytes of its own.
pub const MIN_DISK_BYTES: u64 = 4 << 20;

/// What `mkfs.ext4` the image is formatted with (e2fsprogs).
const MKFS: &str = "mkfs.ext4";
/// Where it is looked for (airlock's own PATH may not hold `/sbin`).
const MKFS_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "--disk for a cow workspace needs root (a loop-mounted image); rootless, a user namespace cannot mount one: \
         run without --disk (the layer is then bounded only by the state directory's filesystem) or as root"
    )]
    NeedsRoot,
    #[error("--disk {size}: too small for the workspace layer's ext4 image (at least {}M)", MIN_DISK_BYTES >> 20)]
    TooSmall { size: u64 },
    #[error("--disk {size}: more than the {free} bytes free on {path}, where the layer's image would grow; free space or choose a smaller size")]
    NoRoom { size: u64, free: u64, path: String },
    #[error("cannot create the layer image {path}: {source}")]
    CreateImage { path: String, source: std::io::Error },
    #[error("cannot format the layer image {path} with {MKFS} (install e2fsprogs): {detail}")]
    Format { path: String, detail: String },
    #[error("cannot open the layer image {path}: {source}")]
    OpenImage { path: String, source: std::io::Error },
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error("cannot mount the layer image {image} ({device}) on {mountpoint}: {}", os_error_text(.error))]
    Mount { image: String, device: String, mountpoint: String, error: std::io::Error },
    #[error("cannot unmount the layer {mountpoint}: {}", os_error_text(.error))]
    Unmount { mountpoint: String, error: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Stat { path: String, source: std::io::Error },
}

/// Creates `image` (sparse, `size` bytes, mode 600, must not exist) and formats it ext4, root-owned root
/// directory, no blocks reserved (the sandbox's identity is never host root, so reserved blocks would be lost).
pub fn create_image(image: &Path, size: u64) -> Result<(), DiskError> {
    if !runtime::host::is_host_root() {
        return Err(DiskError::NeedsRoot);
    }
    if size < MIN_DISK_BYTES {
        return Err(DiskError::TooSmall { size });
    }
    let display = image.display().to_string();
    let parent = image.parent().unwrap_or(Path::new("/"));
    let free = free_bytes(parent)?;
    if size > free {
        return Err(DiskError::NoRoom { size, free, path: parent.display().to_string() });
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .map_err(|source| DiskError::CreateImage { path: display.clone(), source })?;
    file.set_len(size).map_err(|source| DiskError::CreateImage { path: display.clone(), source })?;
    drop(file);
    let mkfs = MKFS_DIRS
        .iter()
        .map(|d| Path::new(d).join(MKFS))
        .find(|p| p.is_file())
        .ok_or_else(|| DiskError::Format { path: display.clone(), detail: format!("{MKFS} not found") })?;
    let out = Command::new(&mkfs)
        .args(["-q", "-F", "-m", "0", "-E", "nodiscard,root_owner=0:0", "-L", "airlock-layer"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| DiskError::Format { path: display.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        return Err(DiskError::Format { path: display, detail: format!("{}: {detail}", out.status) });
    }
    Ok(())
}

/// The image's size (what `--disk` was when the sandbox was created).
pub fn image_size(image: &Path) -> Result<u64, DiskError> {
    std::fs::symlink_metadata(image)
        .map(|m| m.len())
        .map_err(|source| DiskError::Stat { path: image.display().to_string(), source })
}

/// Whether a filesystem other than its parent's is mounted on `mountpoint`.
pub fn is_mounted(mountpoint: &Path) -> Result<bool, DiskError> {
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p).map_err(|source| DiskError::Stat { path: p.display().to_string(), source })
    };
    let parent = mountpoint.parent().unwrap_or(Path::new("/"));
    match std::fs::symlink_metadata(mountpoint) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DiskError::Stat { path: mountpoint.display().to_string(), source }),
        Ok(m) => Ok(m.dev() != stat(parent)?.dev()),
    }
}

/// Mounts `image` on `mountpoint` (created if missing) unless it is mounted there already. The image is locked
/// (`flock`) meanwhile, so two airlock commands never mount it twice.
pub fn ensure_mounted(image: &Path, mountpoint: &Path) -> Result<(), DiskError> {
    if is_mounted(mountpoint)? {
        return Ok(());
    }
    if !runtime::host::is_host_root() {
        return Err(DiskError::NeedsRoot);
    }
    let display = image.display().to_string();
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .map_err(|source| DiskError::OpenImage { path: display.clone(), source })?;
    // Blocking: another airlock mounting it finishes first.
    let locked = loop {
        match sys::fd::flock(file.as_fd(), libc::LOCK_EX) {
            Err(libc::EINTR) => continue,
            other => break other,
        }
    };
    locked.map_err(|e| DiskError::OpenImage { path: display.clone(), source: std::io::Error::from_raw_os_error(e) })?;
    if is_mounted(mountpoint)? {
        return Ok(());
    }
    match std::fs::DirBuilder::new().create(mountpoint) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(DiskError::Stat { path: mountpoint.display().to_string(), source }),
    }
    let device = loopdev::attach(file.as_fd(), &display)?;
    let mount_error = |errno: i32| DiskError::Mount {
        image: display.clone(),
        device: device.path.clone(),
        mountpoint: mountpoint.display().to_string(),
        error: os_error(errno),
    };
    let source = CString::new(device.path.as_bytes()).map_err(|_| mount_error(libc::EINVAL))?;
    let target = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|_| mount_error(libc::EINVAL))?;
    sys::mount::mount(Some(&source), &target, Some(c"ext4"), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None)
        .map_err(mount_error)?;
    // Dropping `device` closes our descriptor: from now on the mount alone holds the device (autoclear).
    drop(device);
    Ok(())
}

/// Unmounts the layer at `mountpoint` if it is mounted (the loop device then detaches itself).
pub fn unmount(mountpoint: &Path) -> Result<(), DiskError> {
    if !is_mounted(mountpoint)? {
        return Ok(());
    }
    let error =
        |errno: i32| DiskError::Unmount { mountpoint: mountpoint.display().to_string(), error: os_error(errno) };
    let target = CString::new(mountpoint.as_os_str().as_bytes()).map_err(|_| error(libc::EINVAL))?;
    // Not lazily: a busy layer (a sandbox or a command still using it) stays, and the caller keeps its image.
    sys::mount::umount2(&target, libc::UMOUNT_NOFOLLOW).map_err(error)?;
    Ok(())
}

/// Bytes available to unprivileged writers on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, DiskError> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| DiskError::Stat {
        path: dir.display().to_string(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    let st = sys::fs::statvfs(&path).map_err(|e| DiskError::Stat {
        path: dir.display().to_string(),
        source: std::io::Error::from_raw_os_error(e),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Makes, mounts, writes to, unmounts and deletes a small image in a scratch directory under `/tmp`: whether
/// `--disk` can bound a cow layer here (`airlock doctor`).
pub fn probe() -> Result<(), DiskError> {
    let scratch = std::env::temp_dir().join(format!("airlock-doctor-disk.{}", std::process::id()));
    let stat_error = |source| DiskError::Stat { path: scratch.display().to_string(), source };
    std::fs::DirBuilder::new().mode(0o700).create(&scratch).map_err(stat_error)?;
    let (image, mountpoint) = (scratch.join("layer.img"), scratch.join("layer"));
    let result =
        create_image(&image, MIN_DISK_BYTES).and_then(|()| ensure_mounted(&image, &mountpoint)).and_then(|()| {
            let written = std::fs::write(mountpoint.join("probe"), b"ok")
                .map_err(|source| DiskError::Stat { path: mountpoint.display().to_string(), source });
            unmount(&mountpoint).and(written)
        });
    let _ = unmount(&mountpoint);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
