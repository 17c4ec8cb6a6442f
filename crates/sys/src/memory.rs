//! Memory: the process's own executable's pages, and the machine's RAM.

use crate::Errno;

/// What [`release_executable_pages`] dropped: its read-only segments' size, in bytes (mapped or not).
pub type ReleasedBytes = usize;

/// A page-aligned range `[start, end)` of the process's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

/// One `PT_LOAD` or `PT_GNU_RELRO` program header, reduced to what the decision needs (addresses relative to the
/// executable's load address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    vaddr: usize,
    filesz: usize,
    memsz: usize,
    /// Written by the process: a writable `PT_LOAD`, or `PT_GNU_RELRO` (written by the relocation pass, then
    /// made read-only; its pages are private copies).
    written: bool,
}

/// The page ranges (relative to the load address) of the read-only segments that hold only the file's content,
/// minus every page any written segment touches (two segments may share a page at their boundary; such a page
/// is kept).
fn read_only_ranges(segments: &[Segment], page: usize, out: &mut [Range]) -> usize {
    let down = |a: usize| a & !(page - 1);
    let up = |a: usize| a.saturating_add(page - 1) & !(page - 1);
    let mut n = 0;
    for seg in segments.iter().filter(|s| !s.written && s.memsz > 0) {
        // A read-only segment longer in memory than in the file has zero-filled (anonymous) pages: kept whole.
        if seg.memsz != seg.filesz || n == out.len() {
            continue;
        }
        let (mut start, mut end) = (down(seg.vaddr), up(seg.vaddr.saturating_add(seg.memsz)));
        for w in segments.iter().filter(|s| s.written && s.memsz > 0) {
            let (ws, we) = (down(w.vaddr), up(w.vaddr.saturating_add(w.memsz)));
            if ws < end && start < we {
                // Overlapping pages: keep the part of the read-only range outside the written one, when it is
                // on one side (a written segment inside a read-only one does not occur: keep the whole range).
                if ws <= start {
                    start = start.max(we);
                } else if we >= end {
                    end = end.min(ws);
                } else {
                    start = end;
                }
            }
        }
        if start < end {
            out[n] = Range { start, end };
            n += 1;
        }
    }
    n
}

/// The machine's RAM in bytes: `sysinfo(2)`'s `totalram` in units of `mem_unit`, the figure `/proc/meminfo`
/// shows as `MemTotal` (one system call, where reading that file has the kernel format all of its ~50 lines).
pub fn total_ram_bytes() -> Result<u64, Errno> {
    // SAFETY: `struct sysinfo` is plain integers (and padding), for which all-zero bytes are a valid value.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo writes one `struct sysinfo` into a live local.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return Err(crate::errno());
    }
    Ok(info.totalram.saturating_mul(u64::from(info.mem_unit.max(1))))
}

/// The most program headers looked at (an executable has ~12).
const MAX_SEGMENTS: usize = 32;

/// Drops the page-table entries of the process's own executable's read-only segments (its code, read-only data,
/// unwind tables): `madvise(MADV_DONTNEED)` over each. What is used again comes back from the page cache at the
/// next access, one minor fault (and the kernel's fault-around) at a time; what start-up alone used stays out of
/// the process's resident set. Libraries are not touched (airlock's executables are static).
///
/// Sound for any caller: those pages are private mappings of the file that the process never writes (no text
/// relocations: refused with `ENOEXEC` if the executable has any), so each reads back as it was. A debugger's
/// breakpoint written into the code would be dropped with its page. Allocates nothing.
pub fn release_executable_pages() -> Result<ReleasedBytes, Errno> {
    // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions.
    let (phdr, phnum, page) =
        unsafe { (libc::getauxval(libc::AT_PHDR), libc::getauxval(libc::AT_PHNUM), libc::getauxval(libc::AT_PAGESZ)) };
    let (phdr, phnum, page) = (phdr as usize, phnum as usize, page as usize);
    if phdr == 0 || phnum == 0 || phnum > MAX_SEGMENTS || !page.is_power_of_two() {
        return Err(libc::ENOEXEC);
    }
    // SAFETY: AT_PHDR/AT_PHNUM are the kernel's description of the executable's program header table, which is
    // mapped (in its first read-only segment) for the process's whole life, aligned for Elf64_Phdr.
    let headers = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum) };
    // The load address: where PT_PHDR says the table is, against where it is.
    let bias = headers
        .iter()
        .find(|h| h.p_type == libc::PT_PHDR)
        .map(|h| phdr.wrapping_sub(h.p_vaddr as usize))
        .ok_or(libc::ENOEXEC)?;
    let mut segments = [Segment { vaddr: 0, filesz: 0, memsz: 0, written: true }; MAX_SEGMENTS];
    let mut count = 0;
    for h in headers {
        let written = match h.p_type {
            libc::PT_LOAD => h.p_flags & libc::PF_W != 0,
            libc::PT_GNU_RELRO => true,
            libc::PT_DYNAMIC if has_text_relocations(bias, h) => return Err(libc::ENOEXEC),
            _ => continue,
        };
        segments[count] =
            Segment { vaddr: h.p_vaddr as usize, filesz: h.p_filesz as usize, memsz: h.p_memsz as usize, written };
        count += 1;
    }
    let mut ranges = [Range { start: 0, end: 0 }; MAX_SEGMENTS];
    let n = read_only_ranges(&segments[..count], page, &mut ranges);
    let mut released = 0;
    for range in &ranges[..n] {
        let len = range.end - range.start;
        // SAFETY: the range is whole pages of a read-only PT_LOAD segment of the executable, which the kernel
        // mapped private from the file, and which nothing in the process writes: no text relocation (checked
        // above), no page shared with a writable or relocated (RELRO) segment (`read_only_ranges`). Every page
        // of it reads back from the file as it is now; no Rust reference sees a difference.
        crate::check(unsafe {
            libc::madvise(bias.wrapping_add(range.start) as *mut libc::c_void, len, libc::MADV_DONTNEED)
        } as libc::c_long)?;
        released += len;
    }
    Ok(released)
}

/// Whether the dynamic section says the code is relocated in place (`DT_TEXTREL`, or `DF_TEXTREL` in
/// `DT_FLAGS`): then the code's pages are private copies and must be kept.
fn has_text_relocations(bias: usize, dynamic: &libc::Elf64_Phdr) -> bool {
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    /// `Elf64_Dyn` (not in the libc crate).
    #[repr(C)]
    struct Dyn {
        d_tag: i64,
        d_val: u64,
    }
    let count = dynamic.p_memsz as usize / std::mem::size_of::<Dyn>();
    // SAFETY: PT_DYNAMIC is the executable's dynamic section, mapped (in a loaded segment) for the process's
    // whole life and aligned for Elf64_Dyn; it is read only up to its size, and ends at DT_NULL.
    let entries =
        unsafe { std::slice::from_raw_parts(bias.wrapping_add(dynamic.p_vaddr as usize) as *const Dyn, count) };
    entries
        .iter()
        .take_while(|d| d.d_tag != 0)
        .any(|d| d.d_tag == DT_TEXTREL || (d.d_tag == DT_FLAGS && d.d_val & DF_TEXTREL != 0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn total_ram_is_what_proc_meminfo_calls_memtotal() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(super::total_ram_bytes(), Ok(kib * 1024));
    }

    use super::*;

    fn ranges(segments: &[Segment]) -> Vec<Range> {
        let mut out = [Range { start: 0, end: 0 }; MAX_SEGMENTS];
        let n = read_only_ranges(segments, 0x1000, &mut out);
        out[..n].to_vec()
    }

    fn seg(vaddr: usize, size: usize, written: bool) -> Segment {
        Segment { vaddr, filesz: size, memsz: size, written }
    }

    #[test]
    fn the_read_only_segments_of_airlock_netgw_are_dropped_and_nothing_written() {
        // `readelf -l airlock-netgw` (release build of 2026-12-05): R, R E, RW (RELRO in it), RW (+ .bss).
        let segments = [
            seg(0, 0xb8aec, false),
            seg(0xb9b00, 0x23a680, false),
            Segment { vaddr: 0x2f5180, filesz: 0x14268, memsz: 0x14e80, written: true },
            Segment { vaddr: 0x30a3e8, filesz: 0x3c88, memsz: 0xbb40, written: true },
            Segment { vaddr: 0x2f5180, filesz: 0x14268, memsz: 0x14e80, written: true },
        ];
        assert_eq!(ranges(&segments), [Range { start: 0, end: 0xb9000 }, Range { start: 0xb9000, end: 0x2f5000 }],);
    }

    #[test]
    fn a_page_shared_with_a_written_segment_is_kept() {
        let segments = [seg(0, 0x1800, false), seg(0x1800, 0x800, true), seg(0x2000, 0x3000, false)];
        // The page 0x1000 holds both the read-only end and the written start; 0x2000.. is read-only alone.
        assert_eq!(ranges(&segments), [Range { start: 0, end: 0x1000 }, Range { start: 0x2000, end: 0x5000 }]);
        let inside = [seg(0, 0x4000, false), seg(0x1000, 0x1000, true)];
        assert_eq!(ranges(&inside), []);
        let zero_filled = [Segment { vaddr: 0, filesz: 0x1000, memsz: 0x2000, written: false }];
        assert_eq!(ranges(&zero_filled), []);
    }

    #[test]
    fn the_test_binarys_code_runs_after_its_pages_are_dropped() {
        let released = release_executable_pages().unwrap();
        assert!(released > 0);
        // This code, the formatting machinery and its read-only data came back from the file as they were.
        assert_eq!(format!("{released:x}"), format!("{:x}", released));
        assert_eq!(release_executable_pages().unwrap(), released);
    }
}
