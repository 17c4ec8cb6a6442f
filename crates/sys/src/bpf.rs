//! BPF: the kernel-side exec source of the audit log (`bpf/exec_tracer.bpf.c`, loaded through the light skeleton
//! the build generates) and the reader of its ring buffer (`BPF_MAP_TYPE_RINGBUF`, mapped into this process).
//!
//! Unlike the rest of this crate, loading allocates (the skeleton's C code): it is done by the supervisor, in its
//! own process, never after `clone` in the child. Only in builds with `cfg(airlock_exec_bpf)` (set by build.rs
//! on x86-64 Linux unless `AIRLOCK_BUILD_WITHOUT_BPF=1`); elsewhere [`ExecTracer::load`] fails with `ENOSYS`.

use std::os::fd::RawFd;

use crate::Errno;

/// Whether this build has the exec tracer (x86-64 Linux, built without `AIRLOCK_BUILD_WITHOUT_BPF=1`).
pub const BUILT: bool = cfg!(airlock_exec_bpf);

/// Layout of one record (`bpf/exec_record.h`, `struct exec_record`): ten 32-bit header words, then the path,
/// argv and cwd buffers. [`ExecTracer::load`] checks the C side's offsets and size against these.
pub const PATH_BYTES: usize = 4096;
pub const ARGV_BYTES: usize = 32768;
pub const CWD_BYTES: usize = 4096 + 256;
pub const HEADER_BYTES: usize = 40;
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
    }
}

/// `BPF_RINGBUF_BUSY_BIT`, `BPF_RINGBUF_DISCARD_BIT`, `BPF_RINGBUF_HDR_SZ`.
const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
const RINGBUF_HEADER: u64 = 8;

/// The loaded exec tracer: both programs verified, its maps created, the ring buffer mapped here. Attached by
/// [`ExecTracer::attach`]; it records nothing until [`ExecTracer::set_target`] names a pid namespace. Dropping it
/// detaches the programs and frees everything (so does the process's death: the kernel holds them only through
/// this process's descriptors).
pub struct ExecTracer {
    #[cfg(airlock_exec_bpf)]
    skel: std::ptr::NonNull<ffi::Skeleton>,
    ring: Option<RingMapping>,
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
    /// Loads the programs (the kernel verifies and relocates them) and maps the ring buffer. Needs `CAP_BPF` and
    /// `CAP_PERFMON` (or `CAP_SYS_ADMIN`), and a kernel with BTF and kernel-side CO-RE (5.17+).
    #[cfg(airlock_exec_bpf)]
    pub fn load() -> Result<ExecTracer, Errno> {
        let mut layout = [0u32; 4];
        // SAFETY: writes four u32s into the array it is given, which is ours and that long.
        unsafe { ffi::airlock_exec_tracer_layout(&mut layout) };
        let expected = [HEADER_BYTES, HEADER_BYTES + PATH_BYTES, HEADER_BYTES + PATH_BYTES + ARGV_BYTES, RECORD_BYTES];
        if layout.map(|v| v as usize) != expected {
            return Err(libc::EPROTO);
        }
        let mut err: libc::c_int = 0;
        // SAFETY: `err` is a valid int for the call to write; the skeleton returned is ours until destroyed.
        let skel = unsafe { ffi::airlock_exec_tracer_load(&mut err) };
        let Some(skel) = std::ptr::NonNull::new(skel) else {
            return Err(if err == 0 { libc::EINVAL } else { err });
        };
        let mut tracer = ExecTracer { skel, ring: None };
        // SAFETY: the skeleton is loaded (non-null above) and alive for the call.
        let fd = unsafe { ffi::airlock_exec_tracer_ring_fd(skel.as_ptr()) };
        // SAFETY: takes no arguments, returns a constant.
        let data_bytes = unsafe { ffi::airlock_exec_tracer_ring_bytes() } as usize;
        tracer.ring = Some(RingMapping::map(fd, data_bytes)?);
        Ok(tracer)
    }

    #[cfg(not(airlock_exec_bpf))]
    pub fn load() -> Result<ExecTracer, Errno> {
        Err(libc::ENOSYS)
    }

    /// Attaches both programs to their tracepoints.
    pub fn attach(&mut self) -> Result<(), Errno> {
        #[cfg(airlock_exec_bpf)]
        {
            // SAFETY: the skeleton is loaded and ours (`&mut self`).
            match unsafe { ffi::airlock_exec_tracer_attach(self.skel.as_ptr()) } {
                0 => Ok(()),
                e => Err(e),
            }
        }
        #[cfg(not(airlock_exec_bpf))]
        Err(libc::ENOSYS)
    }

    /// From now on, records the processes numbered in the pid namespace with this inode number.
    pub fn set_target(&mut self, pid_namespace_inode: u32) {
        #[cfg(airlock_exec_bpf)]
        // SAFETY: the skeleton is loaded; the store is atomic into its mapped .bss.
        unsafe {
            ffi::airlock_exec_tracer_set_target(self.skel.as_ptr(), pid_namespace_inode)
        };
        #[cfg(not(airlock_exec_bpf))]
        let _ = pid_namespace_inode;
    }

    /// Records that did not fit in the ring buffer so far.
    pub fn lost(&self) -> u64 {
        #[cfg(airlock_exec_bpf)]
        // SAFETY: the skeleton is loaded; the load is atomic from its mapped .bss.
        return unsafe { ffi::airlock_exec_tracer_lost(self.skel.as_ptr()) };
        #[cfg(not(airlock_exec_bpf))]
        0
    }

    /// The ring buffer's descriptor, for `poll` (readable when records wait; the program wakes pollers only
    /// when the ring is half full).
    pub fn ring_fd(&self) -> RawFd {
        #[cfg(airlock_exec_bpf)]
        // SAFETY: the skeleton is loaded; this reads a descriptor number from it.
        return unsafe { ffi::airlock_exec_tracer_ring_fd(self.skel.as_ptr()) };
        #[cfg(not(airlock_exec_bpf))]
        -1
    }

    /// Hands every record waiting in the ring to `each` (its bytes: [`RECORD_BYTES`] of `struct exec_record`),
    /// oldest first, and frees their space. Returns how many there were.
    pub fn drain(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        self.ring.as_mut().map_or(0, |r| r.drain(each))
    }
}

impl Drop for ExecTracer {
    fn drop(&mut self) {
        drop(self.ring.take());
        #[cfg(airlock_exec_bpf)]
        // SAFETY: the skeleton is ours and destroyed once, here (its mappings above are gone first); it closes the
        // links (detaching the programs), the programs and the maps.
        unsafe {
            ffi::airlock_exec_tracer_destroy(self.skel.as_ptr())
        };
    }
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
