//! BPF: the kernel-side exec source of the audit log (`bpf/exec_tracer.bpf.c`, loaded through the light skeletons
//! the build generates: `exec_tracer`, loaded by one run, and `exec_tracer_shared`, loaded once and pinned in
//! bpffs, see [`SharedTracerObjects`]), the few bpf(2) commands a run of the shared one needs (pin and open pins,
//! map lookups and updates, a ring buffer, a link with an attach cookie), and the reader of the ring buffer
//! (`BPF_MAP_TYPE_RINGBUF`, mapped into this process).
//!
//! Unlike the rest of this crate, loading allocates (the skeleton's C code): it is done by the supervisor, in its
//! own process, never after `clone` in the child. Only in builds with `cfg(airlock_exec_bpf)` (set by build.rs
//! on x86-64 Linux unless `AIRLOCK_BUILD_WITHOUT_BPF=1`); elsewhere [`ExecTracer::load`] fails with `ENOSYS`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::Errno;

/// Whether this build has the exec tracer (x86-64 Linux, built without `AIRLOCK_BUILD_WITHOUT_BPF=1`).
pub const BUILT: bool = cfg!(airlock_exec_bpf);

/// Layout of one record (`bpf/exec_record.h`, `struct exec_record`): twelve 32-bit header words, then the path,
/// argv and cwd buffers. [`ExecTracer::load`] checks the C side's offsets and size against these.
pub const PATH_BYTES: usize = 4096;
pub const ARGV_BYTES: usize = 32768;
pub const CWD_BYTES: usize = 4096 + 256;
pub const HEADER_BYTES: usize = 48;
pub const RECORD_BYTES: usize = HEADER_BYTES + PATH_BYTES + ARGV_BYTES + CWD_BYTES;
/// `flags` bits.
pub const PATH_TRUNCATED: u32 = 1;
pub const ARGV_TRUNCATED: u32 = 2;
pub const CWD_TRUNCATED: u32 = 4;

#[cfg(airlock_exec_bpf)]
mod ffi {
    #[repr(C)]
    pub struct Skeleton {
        _opaque: [u8; 0],
    }

    extern "C" {
        pub fn airlock_exec_tracer_load(err: *mut libc::c_int) -> *mut Skeleton;
        pub fn airlock_exec_tracer_attach(skel: *mut Skeleton) -> libc::c_int;
        pub fn airlock_exec_tracer_ring_fd(skel: *const Skeleton) -> libc::c_int;
        pub fn airlock_exec_tracer_set_target(skel: *mut Skeleton, target_ns: u32);
        pub fn airlock_exec_tracer_lost(skel: *const Skeleton) -> u64;
        pub fn airlock_exec_tracer_destroy(skel: *mut Skeleton);
        pub fn airlock_exec_tracer_layout(layout: *mut [u32; 4]);
        pub fn airlock_exec_tracer_ring_bytes() -> u32;
        pub fn airlock_exec_tracer_shared_load(fds: *mut [libc::c_int; 4]) -> libc::c_int;
        pub fn airlock_exec_tracer_shared_layout(layout: *mut [u32; 2]);
    }
}

/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`.
const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
const RINGBUF_HEADER: u64 = 8;

/// The name of this build's shared exec tracer (a hash of its skeleton): the directory it is pinned under, so
/// that a build never attaches another build's program.
pub const SHARED_TRACER_NAME: &str = match option_env!("AIRLOCK_EXEC_TRACER_SHARED_HASH") {
    Some(hash) => hash,
    None => "none",
};

/// The shared variant's `struct exec_run` (bpf/exec_record.h): one slot's entry in its `runs` map, naming the run
/// that holds the slot (a pid of 0: free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecRun {
    /// Records lost to a full ring (the program counts them).
    pub lost: u64,
    /// The supervisor's start time, in clock ticks after boot.
    pub supervisor_start: u64,
    /// The supervisor's pid, as its own pid namespace numbers it.
    pub supervisor_pid: u32,
    /// That pid namespace's inode number.
    pub supervisor_pid_ns: u32,
}

const EXEC_RUN_BYTES: usize = 24;

impl ExecRun {
    fn to_bytes(self) -> [u8; EXEC_RUN_BYTES] {
        let mut b = [0u8; EXEC_RUN_BYTES];
        b[0..8].copy_from_slice(&self.lost.to_ne_bytes());
        b[8..16].copy_from_slice(&self.supervisor_start.to_ne_bytes());
        b[16..20].copy_from_slice(&self.supervisor_pid.to_ne_bytes());
        b[20..24].copy_from_slice(&self.supervisor_pid_ns.to_ne_bytes());
        b
    }

    fn from_bytes(b: &[u8; EXEC_RUN_BYTES]) -> ExecRun {
        let u64_at = |at: usize| {
            u64::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
        };
        let u32_at = |at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        ExecRun {
            lost: u64_at(0),
            supervisor_start: u64_at(8),
            supervisor_pid: u32_at(16),
            supervisor_pid_ns: u32_at(20),
        }
    }
}

/// The shared exec tracer's four kernel objects (loaded once, pinned in bpffs, reopened by every audited run):
/// its two programs, the hash of rings and the hash of slot entries ([`ExecRun`]), both keyed by slot number.
pub struct SharedTracerObjects {
    pub exec_done: OwnedFd,
    pub exec_failed: OwnedFd,
    pub rings: OwnedFd,
    pub runs: OwnedFd,
}

/// Slots of the shared variant: audited runs at once (bpf/exec_record.h's `EXEC_SHARED_SLOTS`, checked at load,
/// as the size of a slot's entry is); more run with programs of their own.
pub const EXEC_SHARED_SLOTS: u32 = 1024;

/// The names the objects are pinned under, in [`SharedTracerObjects::fds`]'s order.
pub const SHARED_TRACER_PINS: [&str; 4] = ["exec_done", "exec_failed", "rings", "runs"];

impl SharedTracerObjects {
    /// Loads the shared variant (the kernel verifies and relocates it): not attached, nothing pinned.
    #[cfg(airlock_exec_bpf)]
    pub fn load() -> Result<SharedTracerObjects, Errno> {
        let mut layout = [0u32; 2];
        // SAFETY: writes two u32s into the array it is given, which is ours and that long.
        unsafe { ffi::airlock_exec_tracer_shared_layout(&mut layout) };
        if layout != [EXEC_SHARED_SLOTS, EXEC_RUN_BYTES as u32] {
            return Err(libc::EPROTO);
        }
        let mut fds = [-1; 4];
        // SAFETY: the shim writes four descriptors into the array, which is ours and that long; on success they
        // are open and ours alone (duplicates of the skeleton's, which it closed).
        match unsafe { ffi::airlock_exec_tracer_shared_load(&mut fds) } {
            0 => {}
            e => return Err(e),
        }
        let [exec_done, exec_failed, rings, runs] = fds.map(|fd| {
            // SAFETY: each is a descriptor the shim opened for us and nobody else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        Ok(SharedTracerObjects { exec_done, exec_failed, rings, runs })
    }

    #[cfg(not(airlock_exec_bpf))]
    pub fn load() -> Result<SharedTracerObjects, Errno> {
        Err(libc::ENOSYS)
    }

    /// The objects' descriptors, in the order of [`SHARED_TRACER_PINS`].
    pub fn fds(&self) -> [BorrowedFd<'_>; 4] {
        [self.exec_done.as_fd(), self.exec_failed.as_fd(), self.rings.as_fd(), self.runs.as_fd()]
    }

    /// Opens the objects pinned in `dir` under [`SHARED_TRACER_PINS`].
    pub fn open_pinned(dir: &std::path::Path) -> Result<SharedTracerObjects, Errno> {
        let [exec_done, exec_failed, rings, runs] = SHARED_TRACER_PINS.map(|name| object_get(&dir.join(name)));
        Ok(SharedTracerObjects { exec_done: exec_done?, exec_failed: exec_failed?, rings: rings?, runs: runs? })
    }

    /// Pins the objects in `dir` (an existing directory of a bpffs) under [`SHARED_TRACER_PINS`].
    pub fn pin(&self, dir: &std::path::Path) -> Result<(), Errno> {
        for (fd, name) in self.fds().into_iter().zip(SHARED_TRACER_PINS) {
            object_pin(fd, &dir.join(name))?;
        }
        Ok(())
    }

    /// Every slot's entry in `runs`, by slot number (entries that vanish while they are listed are left out).
    pub fn slots(&self) -> Result<Vec<(u32, ExecRun)>, Errno> {
        let mut out = Vec::new();
        let mut key: Option<u32> = None;
        loop {
            let mut next = [0u8; 4];
            match map_next_key(self.runs.as_fd(), key.map(u32::to_ne_bytes).as_ref().map(|k| &k[..]), &mut next) {
                Ok(()) => {}
                Err(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
            let slot = u32::from_ne_bytes(next);
            let mut value = [0u8; EXEC_RUN_BYTES];
            match map_lookup(self.runs.as_fd(), &next, &mut value) {
                Ok(()) => out.push((slot, ExecRun::from_bytes(&value))),
                Err(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            key = Some(slot);
        }
    }

    /// Writes a slot's entry (taking it, or leaving it free with a pid of 0).
    pub fn set_slot(&self, slot: u32, run: ExecRun) -> Result<(), Errno> {
        map_update(self.runs.as_fd(), &slot.to_ne_bytes(), &run.to_bytes(), BPF_ANY)
    }

    /// A slot's entry.
    pub fn slot(&self, slot: u32) -> Result<ExecRun, Errno> {
        let mut value = [0u8; EXEC_RUN_BYTES];
        map_lookup(self.runs.as_fd(), &slot.to_ne_bytes(), &mut value)?;
        Ok(ExecRun::from_bytes(&value))
    }

    /// A descriptor of a slot's ring (`ENOENT`: the slot has none).
    pub fn ring_of_slot(&self, slot: u32) -> Result<OwnedFd, Errno> {
        let mut id = [0u8; 4];
        // A map of maps answers a lookup with the inner map's id.
        map_lookup(self.rings.as_fd(), &slot.to_ne_bytes(), &mut id)?;
        let mut attr = Attr::default();
        attr.set(0, &id);
        owned_fd(bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)?)
    }

    /// Puts a new ring in a slot. Slow: the kernel waits for an RCU grace period after changing a map of maps.
    pub fn add_ring(&self, slot: u32, ring: BorrowedFd<'_>) -> Result<(), Errno> {
        let fd = u32::try_from(ring.as_raw_fd()).map_err(|_| libc::EBADF)?;
        map_update(self.rings.as_fd(), &slot.to_ne_bytes(), &fd.to_ne_bytes(), BPF_ANY)
    }
}

/// A new ring buffer for the exec tracer ([`ExecTracer::shared`]'s, put in a slot by
/// [`SharedTracerObjects::add_ring`]).
pub fn new_exec_ring() -> Result<OwnedFd, Errno> {
    ringbuf_create(u32::try_from(ring_bytes()).map_err(|_| libc::EOVERFLOW)?)
}

/// The loaded exec tracer: both programs verified, its maps created, the ring buffer mapped here. Attached by
/// [`ExecTracer::attach`]; it records nothing until [`ExecTracer::set_target`] names a pid namespace. Dropping it
/// detaches the programs and frees everything (so does the process's death: the kernel holds them only through
/// this process's descriptors; a shared variant's slot whose holder was killed is taken by a later run, see
/// `runtime::exec_tracepoints`).
pub struct ExecTracer {
    source: TracerSource,
    ring: Option<RingMapping>,
}

enum TracerSource {
    /// The per-run variant, loaded by this run.
    #[cfg(airlock_exec_bpf)]
    PerRun(std::ptr::NonNull<ffi::Skeleton>),
    /// The shared variant: a slot this run holds (its ring, its entry), its links made by
    /// [`ExecTracer::set_target`]; the slot is left free when it is dropped.
    Shared { objects: SharedTracerObjects, slot: u32, ring: OwnedFd, links: Vec<OwnedFd> },
}

/// The ring buffer's two mappings: the consumer position (ours to write) and, read-only, the producer position
/// followed by the data pages mapped twice in a row (a record that wraps around the end reads contiguously).
struct RingMapping {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
    data_bytes: usize,
}

impl ExecTracer {
    /// Loads the per-run variant (the kernel verifies and relocates it) and maps its ring buffer. Needs
    /// `CAP_BPF` and `CAP_PERFMON` (or `CAP_SYS_ADMIN`), and a kernel with BTF and kernel-side CO-RE (5.17+).
    #[cfg(airlock_exec_bpf)]
    pub fn load() -> Result<ExecTracer, Errno> {
        check_record_layout()?;
        let mut err: libc::c_int = 0;
        // SAFETY: `err` is a valid int for the call to write; the skeleton returned is ours until destroyed.
        let skel = unsafe { ffi::airlock_exec_tracer_load(&mut err) };
        let Some(skel) = std::ptr::NonNull::new(skel) else {
            return Err(if err == 0 { libc::EINVAL } else { err });
        };
        let mut tracer = ExecTracer { source: TracerSource::PerRun(skel), ring: None };
        // SAFETY: the skeleton is loaded (non-null above) and alive for the call.
        let fd = unsafe { ffi::airlock_exec_tracer_ring_fd(skel.as_ptr()) };
        tracer.ring = Some(RingMapping::map(fd, ring_bytes())?);
        Ok(tracer)
    }

    #[cfg(not(airlock_exec_bpf))]
    pub fn load() -> Result<ExecTracer, Errno> {
        Err(libc::ENOSYS)
    }

    /// A run of the shared variant in `slot`, which the caller holds (its entry names this run), with that slot's
    /// ring: mapped here, and emptied of anything an earlier holder left. Nothing is recorded before
    /// [`ExecTracer::set_target`].
    pub fn shared(objects: SharedTracerObjects, slot: u32, ring: OwnedFd) -> Result<ExecTracer, Errno> {
        check_record_layout()?;
        let mapping = RingMapping::map(ring.as_raw_fd(), ring_bytes())?;
        mapping.skip_to_end();
        Ok(ExecTracer { source: TracerSource::Shared { objects, slot, ring, links: Vec::new() }, ring: Some(mapping) })
    }

    /// Attaches the per-run variant's programs to their tracepoints (the shared variant attaches in
    /// [`ExecTracer::set_target`], its links carrying the target).
    pub fn attach(&mut self) -> Result<(), Errno> {
        match &self.source {
            #[cfg(airlock_exec_bpf)]
            // SAFETY: the skeleton is loaded and ours (`&mut self`).
            TracerSource::PerRun(skel) => match unsafe { ffi::airlock_exec_tracer_attach(skel.as_ptr()) } {
                0 => Ok(()),
                e => Err(e),
            },
            TracerSource::Shared { .. } => Ok(()),
        }
    }

    /// From now on, records the processes numbered in the pid namespace with this inode number. The shared
    /// variant writes `run` (this supervisor) into its slot's entry, then attaches both programs with links of
    /// its own whose attach cookie is `slot << 32 | pid_namespace_inode` (a kernel of 6.10 or later).
    pub fn set_target(&mut self, pid_namespace_inode: u32, run: ExecRun) -> Result<(), Errno> {
        match &mut self.source {
            #[cfg(airlock_exec_bpf)]
            TracerSource::PerRun(skel) => {
                let _ = run;
                // SAFETY: the skeleton is loaded; the store is atomic into its mapped .bss.
                unsafe { ffi::airlock_exec_tracer_set_target(skel.as_ptr(), pid_namespace_inode) };
                Ok(())
            }
            TracerSource::Shared { objects, slot, links, .. } => {
                // Named once: links already made carry a target.
                if !links.is_empty() {
                    return Err(libc::EBUSY);
                }
                objects.set_slot(*slot, run)?;
                let cookie = (u64::from(*slot) << 32) | u64::from(pid_namespace_inode);
                for prog in [objects.exec_done.as_fd(), objects.exec_failed.as_fd()] {
                    links.push(raw_tracepoint_open(prog, cookie)?);
                }
                Ok(())
            }
        }
    }

    /// Whether this is a run of the shared variant.
    pub fn is_shared(&self) -> bool {
        matches!(self.source, TracerSource::Shared { .. })
    }

    /// Records that did not fit in the ring buffer so far.
    pub fn lost(&self) -> u64 {
        match &self.source {
            #[cfg(airlock_exec_bpf)]
            // SAFETY: the skeleton is loaded; the load is atomic from its mapped .bss.
            TracerSource::PerRun(skel) => unsafe { ffi::airlock_exec_tracer_lost(skel.as_ptr()) },
            TracerSource::Shared { objects, slot, .. } => objects.slot(*slot).map_or(0, |run| run.lost),
        }
    }

    /// The ring buffer's descriptor, for `poll` (readable when records wait; the program wakes pollers only
    /// when the ring is half full).
    pub fn ring_fd(&self) -> RawFd {
        match &self.source {
            #[cfg(airlock_exec_bpf)]
            // SAFETY: the skeleton is loaded; this reads a descriptor number from it.
            TracerSource::PerRun(skel) => unsafe { ffi::airlock_exec_tracer_ring_fd(skel.as_ptr()) },
            TracerSource::Shared { ring, .. } => ring.as_raw_fd(),
        }
    }

    /// Hands every record waiting in the ring to `each` (its bytes: [`RECORD_BYTES`] of `struct exec_record`),
    /// oldest first, and frees their space. Returns how many there were.
    pub fn drain(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        self.ring.as_mut().map_or(0, |r| r.drain(each))
    }
}

impl Drop for ExecTracer {
    fn drop(&mut self) {
        match &mut self.source {
            #[cfg(airlock_exec_bpf)]
            TracerSource::PerRun(skel) => {
                drop(self.ring.take());
                // SAFETY: the skeleton is ours and destroyed once, here (its mappings above are gone first); it
                // closes the links (detaching the programs), the programs and the maps.
                unsafe { ffi::airlock_exec_tracer_destroy(skel.as_ptr()) };
            }
            TracerSource::Shared { objects, slot, links, .. } => {
                // Detached first, then the slot left free for the next run (its ring stays in the map: removing
                // it would wait for an RCU grace period). A record a program still in flight writes after this
                // names this run's pid namespace, and the slot's next reader drops it.
                links.clear();
                drop(self.ring.take());
                let _ = objects.set_slot(*slot, ExecRun::default());
            }
        }
    }
}

/// Checks the C side's record layout against this side's constants.
fn check_record_layout() -> Result<(), Errno> {
    #[cfg(airlock_exec_bpf)]
    {
        let mut layout = [0u32; 4];
        // SAFETY: writes four u32s into the array it is given, which is ours and that long.
        unsafe { ffi::airlock_exec_tracer_layout(&mut layout) };
        let expected = [HEADER_BYTES, HEADER_BYTES + PATH_BYTES, HEADER_BYTES + PATH_BYTES + ARGV_BYTES, RECORD_BYTES];
        if layout.map(|v| v as usize) != expected {
            return Err(libc::EPROTO);
        }
        Ok(())
    }
    #[cfg(not(airlock_exec_bpf))]
    Err(libc::ENOSYS)
}

/// The ring buffer's size in bytes (`EXEC_RING_BYTES`).
fn ring_bytes() -> usize {
    #[cfg(airlock_exec_bpf)]
    // SAFETY: takes no arguments, returns a constant.
    return unsafe { ffi::airlock_exec_tracer_ring_bytes() } as usize;
    #[cfg(not(airlock_exec_bpf))]
    0
}

// The bpf(2) commands used here, and the attribute layouts they read (union bpf_attr, include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_OBJ_PIN: libc::c_int = 6;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_MAP_GET_FD_BY_ID: libc::c_int = 14;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_int = 17;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_ANY: u64 = 0;

/// `union bpf_attr`'s bytes (every layout used here fits in the first 48), aligned as the kernel reads them.
#[repr(C, align(8))]
struct Attr([u8; 48]);

impl Default for Attr {
    fn default() -> Attr {
        Attr([0; 48])
    }
}

impl Attr {
    fn set(&mut self, at: usize, bytes: &[u8]) {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn set_u32(&mut self, at: usize, value: u32) {
        self.set(at, &value.to_ne_bytes());
    }

    fn set_u64(&mut self, at: usize, value: u64) {
        self.set(at, &value.to_ne_bytes());
    }

    fn set_ptr<T: ?Sized>(&mut self, at: usize, ptr: *const T) {
        self.set_u64(at, ptr.cast::<u8>() as u64);
    }
}

/// bpf(2) with `attr`; the call's non-negative result.
fn bpf(cmd: libc::c_int, attr: &mut Attr) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a zero-initialised bpf_attr of the size passed, filled with the command's fields; any
    // pointer in it points at memory the caller keeps alive (and, for output, writable) for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(crate::errno())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = RawFd::try_from(r).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us (close-on-exec: every bpf object descriptor is).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn path_cstring(path: &std::path::Path) -> Result<CString, Errno> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)
}

/// `BPF_OBJ_PIN`: `fd`'s object at `path` on a bpffs.
pub fn object_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> Result<(), Errno> {
    let path = path_cstring(path)?;
    let mut attr = Attr::default();
    attr.set_ptr(0, path.as_ptr());
    attr.set_u32(8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// `BPF_OBJ_GET`: a descriptor of the object pinned at `path`.
pub fn object_get(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    let path = path_cstring(path)?;
    let mut attr = Attr::default();
    attr.set_ptr(0, path.as_ptr());
    owned_fd(bpf(BPF_OBJ_GET, &mut attr)?)
}

/// A new `BPF_MAP_TYPE_RINGBUF` of `bytes` (a power of two, page-aligned).
fn ringbuf_create(bytes: u32) -> Result<OwnedFd, Errno> {
    let mut attr = Attr::default();
    attr.set_u32(0, BPF_MAP_TYPE_RINGBUF);
    attr.set_u32(12, bytes);
    // map_name (16 bytes from offset 28): what bpftool shows.
    attr.set(28, b"airlock_execs");
    owned_fd(bpf(BPF_MAP_CREATE, &mut attr)?)
}

fn map_elem_attr(map: BorrowedFd<'_>, key: *const u8, value: *const u8, flags: u64) -> Attr {
    let mut attr = Attr::default();
    attr.set_u32(0, map.as_raw_fd() as u32);
    attr.set_ptr(8, key);
    attr.set_ptr(16, value);
    attr.set_u64(24, flags);
    attr
}

fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
    bpf(BPF_MAP_UPDATE_ELEM, &mut map_elem_attr(map, key.as_ptr(), value.as_ptr(), flags)).map(drop)
}

fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<(), Errno> {
    bpf(BPF_MAP_LOOKUP_ELEM, &mut map_elem_attr(map, key.as_ptr(), value.as_mut_ptr(), 0)).map(drop)
}

/// The key after `key` (the first with `None`); `ENOENT` after the last.
fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
    let key = key.map_or(std::ptr::null(), <[u8]>::as_ptr);
    bpf(BPF_MAP_GET_NEXT_KEY, &mut map_elem_attr(map, key, next.as_mut_ptr(), 0)).map(drop)
}

/// `BPF_RAW_TRACEPOINT_OPEN` of a `tp_btf` program (its tracepoint named at load) with an attach cookie (read by
/// `bpf_get_attach_cookie`; 6.10+, earlier kernels refuse the field): the link, attached until closed.
fn raw_tracepoint_open(prog: BorrowedFd<'_>, cookie: u64) -> Result<OwnedFd, Errno> {
    let mut attr = Attr::default();
    attr.set_u32(8, prog.as_raw_fd() as u32);
    attr.set_u64(16, cookie);
    owned_fd(bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?)
}

impl RingMapping {
    #[cfg_attr(not(airlock_exec_bpf), allow(dead_code))]
    fn map(fd: RawFd, data_bytes: usize) -> Result<RingMapping, Errno> {
        let page = crate::process::page_size();
        // SAFETY: a new shared mapping of the ring's first page (the consumer position), which the kernel
        // allows read-write; no memory of ours is aliased.
        let consumer = unsafe {
            libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if consumer == libc::MAP_FAILED {
            return Err(crate::errno());
        }
        // SAFETY: a new read-only shared mapping of the producer page and the data pages twice over (the layout
        // the kernel gives a ring buffer's mapping at offset one page); no memory of ours is aliased.
        let producer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + 2 * data_bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                page as libc::off_t,
            )
        };
        if producer == libc::MAP_FAILED {
            let e = crate::errno();
            // SAFETY: the mapping made above, unmapped once.
            unsafe { libc::munmap(consumer, page) };
            return Err(e);
        }
        let ring = RingMapping { consumer, producer, page, data_bytes };
        // Not inherited by a child (`clone` without CLONE_VM): the sandbox's init is cloned from this process
        // after the load, and must not hold a writable view of the ring's consumer position.
        for (at, len) in [(consumer, page), (producer, page + 2 * data_bytes)] {
            // SAFETY: advice on mappings made above (their whole length); it changes only what a fork inherits.
            if unsafe { libc::madvise(at, len, libc::MADV_DONTFORK) } != 0 {
                return Err(crate::errno());
            }
        }
        Ok(ring)
    }

    /// Marks everything in the ring read (a reused ring's leftovers are not this run's).
    fn skip_to_end(&self) {
        use std::sync::atomic::Ordering;
        let produced = self.producer_pos().load(Ordering::Acquire);
        self.consumer_pos().store(produced, Ordering::Release);
    }

    fn consumer_pos(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: the consumer page is mapped for as long as `self` lives, page-aligned (so 8-byte aligned), and
        // its first 8 bytes are the consumer position, which only we write; the kernel reads it concurrently,
        // hence the atomic.
        unsafe { &*self.consumer.cast::<std::sync::atomic::AtomicU64>() }
    }

    fn producer_pos(&self) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: as above, for the producer page's first 8 bytes, which the kernel writes concurrently.
        unsafe { &*self.producer.cast::<std::sync::atomic::AtomicU64>() }
    }

    fn drain(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        use std::sync::atomic::{AtomicU32, Ordering};
        let mask = self.data_bytes as u64 - 1;
        // SAFETY: the data pages start one page into the producer mapping, which is `page + 2 * data_bytes` long.
        let data = unsafe { self.producer.cast::<u8>().add(self.page) };
        let mut count = 0;
        let mut consumed = self.consumer_pos().load(Ordering::Acquire);
        loop {
            let produced = self.producer_pos().load(Ordering::Acquire);
            if consumed >= produced {
                return count;
            }
            while consumed < produced {
                let offset = (consumed & mask) as usize;
                // SAFETY: `offset` is within the first copy of the data pages and 8-byte aligned (the kernel
                // aligns every record), so the 4-byte length word is mapped and aligned; the kernel writes it
                // concurrently (busy -> committed), hence the atomic with acquire, as the kernel's release.
                let header = unsafe { &*data.add(offset).cast::<AtomicU32>() };
                let len = header.load(Ordering::Acquire);
                if len & RINGBUF_BUSY != 0 {
                    // Reserved, not yet submitted: the next drain takes it.
                    return count;
                }
                let size = (len & !(RINGBUF_BUSY | RINGBUF_DISCARD)) as usize;
                if len & RINGBUF_DISCARD == 0 && size <= self.data_bytes {
                    // SAFETY: a committed record of `size` bytes after its 8-byte header; the data pages are
                    // mapped twice in a row, so it is contiguous even when it wraps (size <= data_bytes); the
                    // kernel does not write it again until the consumer position passes it (below).
                    let record =
                        unsafe { std::slice::from_raw_parts(data.add(offset + RINGBUF_HEADER as usize), size) };
                    each(record);
                    count += 1;
                }
                consumed += (size as u64 + RINGBUF_HEADER + 7) & !7;
                self.consumer_pos().store(consumed, Ordering::Release);
            }
        }
    }
}

impl Drop for RingMapping {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `map` with these lengths and are unmapped once, here; nothing
        // borrowed from them outlives `self` (drain's slices live only during its callback).
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page + 2 * self.data_bytes);
        }
    }
}
