//! The user namespace's id maps. Root inside is never root outside: as host root, airlock maps a dedicated
//! 65536-id range per running sandbox (never host id 0); rootless, the kernel only lets us map our own id.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::caps::{CAP_SETFCAP, CAP_SETGID, CAP_SETUID};
use crate::failure::os_error;

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
    #[error("cannot map the subordinate ids with {0}: {1}")]
    RunMapTool(PathBuf, String),
    #[error("no subordinate ids to remove files the sandbox gave them: {0}")]
    NoSubordinateIds(String),
    #[error("cannot fork a helper with the subordinate ids")]
    Fork(#[source] std::io::Error),
    #[error("cannot remove {0} as root of a user namespace with the subordinate ids")]
    RemoveAsMappedRoot(PathBuf),
    #[error("cannot make a user namespace for the id range at {base}")]
    HoldRangeNamespace {
        base: u32,
        #[source]
        source: std::io::Error,
    },
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

/// Removes the lock files of ranges nobody holds (left by an airlock killed with `SIGKILL`, which ran no
/// destructor): each one this process can lock is stale, and goes as [`HostIdRange`]'s drop removes its own.
/// Best effort; run after a sandbox, off its start.
pub fn sweep_stale_id_range_locks(lock_dir: &Path) {
    let Ok(dir) = File::open(lock_dir) else { return };
    // `getdents64` into a buffer on the stack, not `fs::read_dir`: `opendir` mallocs 32 KiB, a request for which
    // malloc first consolidates every small chunk freed so far, writing across the heap, which init's fork made
    // copy-on-write: 28 page faults in `malloc_consolidate` at the end of a `run -- /bin/true` (the run's total
    // fell by only 3: later allocations touch most of those pages anyway).
    let mut buf = [0u8; 4096];
    sys::dir::for_each_name(dir.as_fd(), &mut buf, |name| {
        let path = lock_dir.join(OsStr::from_bytes(name));
        if let Ok(Some(_lock)) = lock_slot(&path) {
            let _ = fs::remove_file(&path);
        }
    });
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

/// Writes the uid and gid maps for the sandbox's init `pid`, rootless with `setgroups` = `deny` first.
///
/// Rootless, the kernel requires `setgroups` denied before an unprivileged gid map: otherwise the sandbox could
/// drop the invoker's supplementary groups and pass a permission check that excludes one of them. As host root
/// there is no such group to drop (the supervisor cleared its supplementary groups before clone) and `setgroups`
/// inside can only name gids of the sandbox's own range: it stays allowed, for programs that switch users with
/// their groups, as package managers do (apt's `_apt`).
pub fn write_id_maps(pid: libc::pid_t, host_root: bool, uid_map: &str, gid_map: &str) -> Result<(), UsernsError> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    if !host_root {
        write_proc_file(&dir.join("setgroups"), "deny")?;
    }
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

/// Where the `uidmap` package's set-uid helpers are looked for (not `PATH`: a helper that writes id maps is
/// taken from the system only).
const MAP_TOOL_DIRS: [&str; 3] = ["/usr/bin", "/usr/sbin", "/bin"];

/// Rootless, with subordinate ids: the invoker's `/etc/subuid` and `/etc/subgid` ranges, written into a
/// sandbox's maps by the `newuidmap` and `newgidmap` helpers (set-uid root, they check the ranges against those
/// files), so that a multi-user root filesystem (an image's `_apt`, `nobody`, daemons' users) has its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubordinateIds {
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
    /// First host id and count, from `/etc/subuid` and `/etc/subgid`.
    pub uids: (u32, u32),
    pub gids: (u32, u32),
}

/// The invoker's subordinate ids and the helpers to map them, or what is missing, said so that it can be fixed.
pub fn find_subordinate_ids(euid: u32, egid: u32) -> Result<SubordinateIds, String> {
    let tool = |name: &str| {
        MAP_TOOL_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| format!("{name} is not installed (the `uidmap` package: `apt-get install uidmap`)"))
    };
    let newuidmap = tool("newuidmap")?;
    let newgidmap = tool("newgidmap")?;
    let (user, login_gid) = match crate::host::passwd_entry(euid) {
        Some(entry) => (Some(entry.name), entry.gid),
        None => (None, None),
    };
    // The helpers refuse a caller whose group is not its passwd entry's (after `newgrp`, `sg`, `setpriv`).
    if let Some(login_gid) = login_gid.filter(|g| *g != egid) {
        return Err(format!(
            "newgidmap maps only for your login group ({login_gid}), and this process's group is {egid}"
        ));
    }
    let range = |file: &str, id: u32| {
        let text = fs::read_to_string(file).unwrap_or_default();
        subordinate_range(&text, user.as_deref(), id).ok_or_else(|| {
            let who = user.clone().unwrap_or_else(|| id.to_string());
            format!("{file} has no range for {who} (add `{who}:100000:65536`, or run `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}` as root)")
        })
    };
    let uids = range("/etc/subuid", euid)?;
    let gids = range("/etc/subgid", egid).or_else(|_| range("/etc/subgid", euid))?;
    Ok(SubordinateIds { newuidmap, newgidmap, uids, gids })
}

/// The first `/etc/subuid`-format line (`owner:start:count`) whose owner is `name` or the number `id`.
pub fn subordinate_range(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let (start, count) = (fields.next()?.parse::<u32>().ok()?, fields.next()?.parse::<u32>().ok()?);
        let ours = Some(owner) == name || owner.parse::<u32>().ok() == Some(id);
        (ours && count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

/// `0..size` inside onto `base..base+size` outside, except `inside`, which maps to `owner` when given (and
/// `base + inside` stays unused).
pub fn range_map(base: u32, size: u32, inside: u32, owner: Option<u32>) -> String {
    let Some(owner) = owner else {
        return format!("0 {base} {size}\n");
    };
    let mut map = String::new();
    if inside > 0 {
        map.push_str(&format!("0 {base} {inside}\n"));
    }
    map.push_str(&format!("{inside} {owner} 1\n"));
    let after = inside + 1;
    if after < size {
        map.push_str(&format!("{after} {} {}\n", base + after, size - after));
    }
    map
}

/// Rootless with subordinate ids: `inside` (the sandbox's identity) onto `own` (the invoker's id), the other ids
/// of `0..size` onto the subordinate range, `size` being the range's length up to 65536. `None` when `inside`
/// falls outside.
pub fn subordinate_map(inside: u32, own: u32, (start, count): (u32, u32)) -> Option<String> {
    let size = count.min(HOST_RANGE_SIZE);
    (inside < size).then(|| range_map(start, size, inside, Some(own)))
}

/// The map of [`remove_tree_with_subordinate_ids`]' helper: the invoker at 0 and the whole subordinate range
/// after it. Every id a sandbox can have given a file must be mapped, whatever sandbox identity its map was made
/// around: with the identity at N > 0 ([`subordinate_map`]), the sandbox's root is the range's *first* id, which
/// owns what it made, such as its overlay's `work/work` (mode 000); a map from [`subordinate_map`] at 0 starts
/// the range one id later and leaves that one out. `None` for an empty range.
fn removal_map(own: u32, (start, count): (u32, u32)) -> Option<String> {
    (count > 0).then(|| format!("0 {own} 1\n1 {start} {count}\n"))
}

/// Writes `pid`'s maps through `newuidmap` and `newgidmap` (which also decide `setgroups`: allowed, since the
/// ranges come from the administrator's files). Each tool's one-line complaint is kept for the error.
pub fn write_id_maps_with_tools(
    pid: libc::pid_t,
    tools: &SubordinateIds,
    uid_map: &str,
    gid_map: &str,
) -> Result<(), UsernsError> {
    for (tool, map) in [(&tools.newuidmap, uid_map), (&tools.newgidmap, gid_map)] {
        let out = std::process::Command::new(tool)
            .arg(pid.to_string())
            .args(map.split_whitespace())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| UsernsError::RunMapTool(tool.clone(), e.to_string()))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.lines().next().unwrap_or("no message").trim().to_owned();
            return Err(UsernsError::RunMapTool(tool.clone(), format!("{}: {said}", out.status)));
        }
    }
    Ok(())
}

/// What airlock running as root (effective uid 0) can map into a sandbox's user namespace. On a host that is a
/// full range; in a container it depends on the capabilities and ids the container was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootMapping {
    /// `CAP_SETUID` and `CAP_SETGID`, and this user namespace maps every id of airlock's ranges
    /// (`HOST_RANGE_BASE` up to 2^31): a dedicated 65536-id range per sandbox.
    FullRange,
    /// Only root's own id, as rootless (`why`: what the full range lacks). Mapping uid 0 needs `CAP_SETFCAP`
    /// (Linux 5.12: a namespace whose root is host root could otherwise write file capabilities valid outside).
    OwnIdOnly { why: String },
    /// Not even that: root without `CAP_SETFCAP` (runc's default capabilities), so no id map can be written.
    Nothing { why: String },
}

/// What root can map here, from its effective capabilities (`capget`: this runs at every start as root, where
/// formatting `/proc/self/status` for its `CapEff` line costs tens of microseconds) and `/proc/self/uid_map`,
/// `gid_map`.
pub fn root_mapping() -> RootMapping {
    let read = |path: &str| crate::host::read_small(path).unwrap_or_default();
    let cap_eff = sys::capability::effective_thread_set().unwrap_or(0);
    root_mapping_from(cap_eff, &read("/proc/self/uid_map"), &read("/proc/self/gid_map"))
}

/// [`root_mapping`] from its inputs.
pub fn root_mapping_from(cap_eff: u64, uid_map: &str, gid_map: &str) -> RootMapping {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let end = HOST_RANGE_BASE + HOST_RANGE_SLOTS * HOST_RANGE_SIZE - 1;
    // Every id of the ranges must exist in this namespace (a container's own user namespace maps fewer).
    let covers = |map: &str| {
        map.lines().any(|line| {
            let mut it = line.split_whitespace().map(|f| f.parse::<u64>().ok());
            let (Some(Some(inside)), Some(Some(_)), Some(Some(count))) = (it.next(), it.next(), it.next()) else {
                return false;
            };
            inside <= u64::from(HOST_RANGE_BASE) && inside + count > u64::from(end)
        })
    };
    let why = if !(has(CAP_SETUID) && has(CAP_SETGID)) {
        "root without CAP_SETUID and CAP_SETGID, as in a container, cannot map a range of ids".to_string()
    } else if !(covers(uid_map) && covers(gid_map)) {
        format!(
            "this user namespace (a container's) does not map the ids {HOST_RANGE_BASE}-{end} airlock gives \
             sandboxes"
        )
    } else {
        return RootMapping::FullRange;
    };
    if has(CAP_SETFCAP) {
        RootMapping::OwnIdOnly { why }
    } else {
        RootMapping::Nothing { why: format!("{why}, and without CAP_SETFCAP it cannot map even its own id 0") }
    }
}

/// As host root: a user namespace with the maps given (`base`, the first id of their range, names it in errors),
/// as a descriptor of it (for `MOUNT_ATTR_IDMAP`: the VM backend's layers, idmapped in QEMU's mount namespace, where
/// no sandbox's namespace exists to borrow). A helper makes it and is gone when this returns; the descriptor
/// keeps the namespace. The helper is forked with [`sys::process::fork_and_run`] (the caller may have threads)
/// and does system calls only.
pub fn user_namespace_with_maps(base: u32, uid_map: &str, gid_map: &str) -> Result<std::os::fd::OwnedFd, UsernsError> {
    let fail = |source: std::io::Error| UsernsError::HoldRangeNamespace { base, source };
    let pipes = sys::fd::pipe_cloexec().and_then(|ready| sys::fd::pipe_cloexec().map(|hold| (ready, hold)));
    let ((ready_read, ready_write), (hold_read, hold_write)) = pipes.map_err(|e| fail(os_error(e)))?;
    let (ready_fd, hold_fd) = (ready_write.as_raw_fd(), hold_read.as_raw_fd());
    let parents_ends = (ready_read.as_raw_fd(), hold_write.as_raw_fd());
    let pid = sys::process::fork_and_run(|| {
        // The child: the parent's ends of the pipes closed (the hold pipe's end of file is the parent's letting
        // go, or its death), a new user namespace, said when made; then it waits.
        sys::fd::close(parents_ends.0);
        sys::fd::close(parents_ends.1);
        if sys::namespace::unshare(libc::CLONE_NEWUSER).is_err() || sys::fd::write_all(ready_fd, b"1").is_err() {
            return 1;
        }
        let mut byte = [0u8; 1];
        let _ = sys::fd::read(hold_fd, &mut byte);
        0
    })
    .map_err(|e| fail(os_error(e)))?;
    drop((ready_write, hold_read));
    let mut ready = [0u8; 1];
    let made = match sys::fd::read(ready_read.as_raw_fd(), &mut ready) {
        Ok(1) => write_id_maps(pid, true, uid_map, gid_map)
            .map_err(|e| fail(std::io::Error::other(e.to_string())))
            .and_then(|()| File::open(format!("/proc/{pid}/ns/user")).map(std::os::fd::OwnedFd::from).map_err(fail)),
        _ => Err(fail(std::io::Error::other("the helper could not make a user namespace"))),
    };
    drop(hold_write);
    let _ = sys::wait::wait_for_exit(pid);
    made
}

/// Rootless: removes `path`, where a sandbox may have given files to the invoker's subordinate ids (apt's
/// `_apt` in a writable root's layer), which the invoker cannot remove from outside. A fork enters a new user
/// namespace with the same ids mapped (by `newuidmap`/`newgidmap`), whose root may remove them, and removes the
/// tree there. `remove_dir_all` never follows symlinks.
pub fn remove_tree_with_subordinate_ids(path: &Path) -> Result<(), UsernsError> {
    let (euid, egid) = sys::process::effective_ids();
    let tools = find_subordinate_ids(euid, egid).map_err(UsernsError::NoSubordinateIds)?;
    let (Some(uid_map), Some(gid_map)) = (removal_map(euid, tools.uids), removal_map(egid, tools.gids)) else {
        return Err(UsernsError::NoSubordinateIds("the subordinate ranges are empty".into()));
    };
    let pipes = sys::fd::pipe_cloexec().and_then(|ready| sys::fd::pipe_cloexec().map(|go| (ready, go)));
    let ((ready_read, ready_write), (go_read, go_write)) = pipes.map_err(|e| UsernsError::Fork(os_error(e)))?;
    match sys::process::fork().map_err(|e| UsernsError::Fork(os_error(e)))? {
        sys::process::Forked::Child => {
            // The child of a single-threaded process (checked by `fork`): it may do any work.
            drop((ready_read, go_write));
            if sys::namespace::unshare(libc::CLONE_NEWUSER).is_err()
                || sys::fd::write_all(ready_write.as_raw_fd(), b"1").is_err()
            {
                sys::process::exit_immediately(1);
            }
            let mut go = [0u8; 1];
            if !matches!(sys::fd::read(go_read.as_raw_fd(), &mut go), Ok(1)) {
                sys::process::exit_immediately(1);
            }
            // Root of the namespace now: an overlay's `work/work` (mode 000) opens up, the rest goes.
            let removed = fs::remove_dir_all(path);
            sys::process::exit_immediately(match removed {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(_) => 2,
            })
        }
        sys::process::Forked::Parent(pid) => {
            drop((ready_write, go_read));
            let mut ready = [0u8; 1];
            let mapped = match sys::fd::read(ready_read.as_raw_fd(), &mut ready) {
                Ok(1) => write_id_maps_with_tools(pid, &tools, &uid_map, &gid_map),
                _ => Err(UsernsError::NoSubordinateIds("the helper could not make a user namespace".into())),
            };
            if mapped.is_ok() {
                let _ = sys::fd::write_all(go_write.as_raw_fd(), b"1");
            }
            drop(go_write);
            let status = sys::wait::wait_for_exit(pid);
            mapped?;
            match status {
                Ok(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => Ok(()),
                _ => Err(UsernsError::RemoveAsMappedRoot(path.to_path_buf())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_namespace_maps_its_range_and_outlives_its_helper() {
        if sys::process::effective_uid() != 0 {
            println!("SKIP: a user namespace of a host id range needs host root");
            return;
        }
        let map = format!("0 {HOST_RANGE_BASE} {HOST_RANGE_SIZE}\n");
        let ns = user_namespace_with_maps(HOST_RANGE_BASE, &map, &map).unwrap();
        // Its maps, read through a process that joins it: none needed, the descriptor's namespace is compared
        // with a fresh one's by inode: different, and still there (the helper is gone).
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", ns.as_raw_fd())).unwrap();
        let own = std::fs::metadata("/proc/self/ns/user").unwrap();
        assert_ne!(meta.ino(), own.ino());
        let dir = std::env::temp_dir().join(format!("airlock-userns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // An idmapped mount of it, in a private mount namespace of a child (the test's own stays as it is).
        let pid = sys::process::fork_and_run(|| {
            if sys::namespace::unshare(libc::CLONE_NEWNS).is_err() || sys::mount::make_all_private().is_err() {
                return 2;
            }
            if crate::rootfs::idmap_over_itself(&path, ns.as_raw_fd()).is_err() {
                return 3;
            }
            match std::fs::metadata(dir.join("f")) {
                Ok(m) if m.uid() == HOST_RANGE_BASE && m.gid() == HOST_RANGE_BASE => 0,
                _ => 4,
            }
        })
        .unwrap();
        let status = sys::wait::wait_for_exit(pid).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    #[test]
    fn root_maps_a_range_only_with_the_capabilities_and_the_ids() {
        let all = "0 0 4294967295\n";
        let caps = |list: &[u32]| list.iter().fold(0u64, |m, c| m | 1 << c);
        let docker = caps(&[CAP_SETUID, CAP_SETGID, CAP_SETFCAP]);
        assert_eq!(root_mapping_from(docker, all, all), RootMapping::FullRange);
        // runc's default capabilities: none of the three.
        assert!(matches!(root_mapping_from(caps(&[5, 10, 29]), all, all), RootMapping::Nothing { .. }));
        assert!(matches!(root_mapping_from(caps(&[CAP_SETFCAP]), all, all), RootMapping::OwnIdOnly { .. }));
        // A container's own user namespace with 65536 ids: airlock's ranges are not in it.
        let small = "0 100000 65536\n";
        assert!(matches!(root_mapping_from(docker, small, small), RootMapping::OwnIdOnly { .. }));
        assert!(matches!(root_mapping_from(docker, all, small), RootMapping::OwnIdOnly { .. }));
    }

    #[test]
    fn range_map_without_owner_is_one_line() {
        assert_eq!(range_map(0x7000_0000, HOST_RANGE_SIZE, 0, None), "0 1879048192 65536\n");
    }

    #[test]
    fn range_map_puts_the_owner_at_the_identity() {
        assert_eq!(range_map(100, HOST_RANGE_SIZE, 0, Some(1000)), "0 1000 1\n1 101 65535\n");
        assert_eq!(range_map(100, HOST_RANGE_SIZE, 5, Some(1000)), "0 100 5\n5 1000 1\n6 106 65530\n");
        assert_eq!(range_map(100, HOST_RANGE_SIZE, 65535, Some(1000)), "0 100 65535\n65535 1000 1\n");
    }

    #[test]
    fn subordinate_ranges_are_found_by_name_or_number_and_fit_the_map() {
        let text = "alice:100000:65536\n1001:200000:1000\nbroken:x:1\nempty:5:0\n";
        assert_eq!(subordinate_range(text, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(subordinate_range(text, Some("bob"), 1001), Some((200000, 1000)));
        assert_eq!(subordinate_range(text, Some("broken"), 7), None);
        assert_eq!(subordinate_range(text, Some("empty"), 7), None);
        // Root inside is the invoker; the other ids come from the range, never past its end.
        assert_eq!(subordinate_map(0, 1000, (100000, 65536)).unwrap(), "0 1000 1\n1 100001 65535\n");
        assert_eq!(subordinate_map(0, 1001, (200000, 1000)).unwrap(), "0 1001 1\n1 200001 999\n");
        assert_eq!(subordinate_map(999, 1001, (200000, 1000)).unwrap(), "0 200000 999\n999 1001 1\n");
        assert_eq!(subordinate_map(1000, 1001, (200000, 1000)), None);
    }

    #[test]
    fn the_removal_helper_maps_the_whole_subordinate_range() {
        // A sandbox whose identity is the invoker's own id (999) made its root the range's first id, 300000.
        assert!(subordinate_map(999, 999, (300000, 65536)).unwrap().starts_with("0 300000 999\n"));
        assert_eq!(removal_map(999, (300000, 65536)).unwrap(), "0 999 1\n1 300000 65536\n");
        assert_eq!(removal_map(999, (300000, 0)), None);
    }
}
