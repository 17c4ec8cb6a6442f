//! The user namespace's id maps. Root inside is never root outside: as host root, airlock maps a dedicated
//! 65536-id range per running sandbox (never host id 0); rootless, the kernel only lets us map our own id.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// First host id of the ranges airlock hands out as host root: above systemd's container range
/// (0x00080000–0x6FFFFFFF, used by `systemd-nspawn --private-users=pick`), below 2^31 (some tools treat ids as
/// signed).
pub const HOST_RANGE_BASE: u32 = 0x7000_0000;
/// Ids per sandbox: a full 16-bit range, so images with system users work inside.
pub const HOST_RANGE_SIZE: u32 = 65536;
/// Number of ranges: BASE + SLOTS * SIZE = 2^31.
pub const HOST_RANGE_SLOTS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// cannot create the id-range lock directory {0}
    #[error("cannot create the id-range lock directory {0}")]
    CreateLockDir(PathBuf, #[source] std::io::Error),
    /// cannot lock an id range in {0}
    #[error("cannot lock an id range in {0}")]
    LockRange(PathBuf, #[source] std::io::Error),
    #[error("no free host id range: {HOST_RANGE_SLOTS} sandboxes are running as root already")]
    NoFreeRange,
    #[error("cannot write {0}")]
    WriteMap(PathBuf, #[source] std::io::Error),
}

/// A host id range held for one sandbox. The `flock` is released when this is dropped or airlock dies; on drop
/// the lock file is also removed, so nothing of the sandbox stays on the host (after a crash it stays, under
/// `/run`, which is emptied at boot, and the next sandbox reuses it).
#[derive(Debug)]
pub struct HostIdRange {
    pub base: u32,
    /// Held, not read: dropping it (after `drop` unlinked the path) releases the lock.
    _lock: File,
    path: PathBuf,
}

impl Drop for HostIdRange {
    fn drop(&mut self) {
        // Unlink while still holding the lock: a process that opened the old file and gets the lock after us
        // sees that the path no longer names its inode and tries again (see `lock_slot`).
        let _ = fs::remove_file(&self.path);
    }
}

/// Claims a free range by taking an exclusive `flock` on `lock_dir/<slot>`. The first slot tried depends on
/// our pid so concurrent sandboxes rarely contend.
pub fn allocate_host_id_range(lock_dir: &Path) -> Result<HostIdRange, UsernsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(lock_dir)
        .map_err(|e| UsernsError::CreateLockDir(lock_dir.to_path_buf(), e))?;
    let start = std::process::id() % HOST_RANGE_SLOTS;
    for i in 0..HOST_RANGE_SLOTS {
        let slot = (start + i) % HOST_RANGE_SLOTS;
        let path = lock_dir.join(slot.to_string());
        if let Some(lock) = lock_slot(&path).map_err(|e| UsernsError::LockRange(lock_dir.to_path_buf(), e))? {
            return Ok(HostIdRange { base: HOST_RANGE_BASE + slot * HOST_RANGE_SIZE, _lock: lock, path });
        }
    }
    Err(UsernsError::NoFreeRange)
}

/// Locks the slot's file; `None` when another sandbox holds it.
fn lock_slot(path: &Path) -> std::io::Result<Option<File>> {
    loop {
        let Some(file) = crate::host::try_lock_file(path)? else { return Ok(None) };
        // The holder before us may have unlinked the file between our open and our lock: then our lock is on a
        // file nobody else will ever open, and we must lock the path's current file instead.
        let ours = file.metadata()?;
        match fs::symlink_metadata(path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => return Ok(Some(file)),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `setgroups` = `deny`, then the uid and gid maps, for the sandbox's init `pid`.
///
/// `setgroups` is denied in both modes: rootless the kernel requires it before an unprivileged gid map, and as
/// host root it stops the sandbox from ever adding groups (its supplementary groups were cleared before clone).
pub fn write_id_maps(pid: libc::pid_t, uid_map: &str, gid_map: &str) -> Result<(), UsernsError> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    write_proc_file(&dir.join("setgroups"), "deny")?;
    write_proc_file(&dir.join("uid_map"), uid_map)?;
    write_proc_file(&dir.join("gid_map"), gid_map)?;
    Ok(())
}

fn write_proc_file(path: &Path, contents: &str) -> Result<(), UsernsError> {
    // These files must be written in one write(2).
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| UsernsError::WriteMap(path.to_path_buf(), e))
}

/// `PIPEFS_MAGIC`: the filesystem of anonymous pipes.
const PIPEFS_MAGIC: libc::__fsword_t = 0x5049_5045;

/// As host root, hands the anonymous pipes among our standard streams to the sandbox's host ids. The command
/// inherits them as fds 0-2 either way, but reopening one (`echo x > /dev/stderr` goes through
/// `/proc/self/fd/2`) checks the pipe's owner and mode (root, 0600), which root inside — an unprivileged id
/// outside — would fail. Only anonymous pipes change hands: they exist for this process tree alone. Files and
/// terminals the caller owns are left as they are (use `-t` for a terminal of the sandbox's own).
pub fn hand_stdio_pipes_to(uid: u32, gid: u32) {
    for fd in 0..3 {
        let (Ok(st), Ok(sfs)) = (sys::fd::fstat(fd), sys::fd::fstatfs(fd)) else { continue };
        let is_pipe = st.st_mode & libc::S_IFMT == libc::S_IFIFO && sfs.f_type == PIPEFS_MAGIC && st.st_uid == 0;
        if is_pipe {
            // A failure leaves the pipe as it was, which only costs the convenience.
            let _ = sys::fd::fchown(fd, uid, gid);
        }
    }
}

/// Translates `id` through a `/proc/PID/uid_map`-style text (inside, outside, count per line): an inside id to
/// the host's with [`IdSide::Inside`], a host id to the sandbox's with [`IdSide::Outside`].
pub fn translate_id(map: &str, id: u32, from: IdSide) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut it = line.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (inside, outside, count) = (it.next()??, it.next()??, it.next()??);
        let (start, target) = match from {
            IdSide::Inside => (inside, outside),
            IdSide::Outside => (outside, inside),
        };
        let id = u64::from(id);
        (id >= start && id < start + count).then(|| (target + id - start) as u32)
    })
}

/// Which side of a user namespace's id map an id given to [`translate_id`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSide {
    Inside,
    Outside,
}
