//! Reading a directory by descriptor: `getdents64` into a caller's buffer, and the names in what it filled
//! (no `DIR` stream: `opendir` allocates, and these run after `clone` too, in the live checkpoint's worker).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `getdents64(fd, buf)`: the directory's next entries in `buf` (read them with [`Entries`]), and how many bytes
/// they take; 0 at the end. The offset is the open file description's, shared by every copy of the descriptor.
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is writable for `buf.len()` bytes, the most getdents64 writes; `fd` is borrowed, so open.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    check(n).map(|n| n as usize)
}

/// The offset of `d_name` in `struct linux_dirent64`: `d_ino` (u64), `d_off` (i64), `d_reclen` (u16),
/// `d_type` (u8).
const NAME_OFFSET: usize = 19;

/// The names (without their NUL, `.` and `..` included) of the entries [`getdents64`] wrote: iterate over
/// `Entries::new(&buf[..n])`.
pub struct Entries<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Entries<'a> {
    pub fn new(filled: &'a [u8]) -> Entries<'a> {
        Entries { buf: filled, off: 0 }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let buf = self.buf;
        let off = self.off;
        if off + NAME_OFFSET >= buf.len() {
            return None;
        }
        let reclen = usize::from(u16::from_ne_bytes([buf[off + 16], buf[off + 17]]));
        if reclen == 0 {
            // A record cannot be empty: stop rather than loop on it.
            self.off = buf.len();
            return None;
        }
        let name = &buf[off + NAME_OFFSET..(off + reclen).min(buf.len())];
        self.off = off + reclen;
        Some(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())])
    }
}

/// Calls `each` with the name of every entry of directory `dir` but `.` and `..`, read with [`getdents64`] into
/// `buf` from the descriptor's current offset, until the end of the directory or an error (where readdir stops
/// too). Allocates nothing.
pub fn for_each_name(dir: BorrowedFd<'_>, buf: &mut [u8], mut each: impl FnMut(&[u8])) {
    while let Ok(len @ 1..) = getdents64(dir, buf) {
        for name in Entries::new(&buf[..len]) {
            if name != b"." && name != b".." {
                each(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_directory_reads_back_its_names() {
        let dir = std::env::temp_dir().join(format!("airlock-sys-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["a", "bb", "a-rather-long-name-to-cross-the-record-alignment"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let fd = std::fs::File::open(&dir).unwrap();
        let mut names = Vec::new();
        let mut buf = [0u8; 128];
        loop {
            let n = getdents64(fd.as_fd(), &mut buf).unwrap();
            if n == 0 {
                break;
            }
            names.extend(Entries::new(&buf[..n]).map(|n| String::from_utf8(n.to_vec()).unwrap()));
        }
        names.sort();
        assert_eq!(names, [".", "..", "a", "a-rather-long-name-to-cross-the-record-alignment", "bb"]);
        // The same names but the dots, through a buffer that takes one or two entries at a time.
        let fd = std::fs::File::open(&dir).unwrap();
        let mut names = Vec::new();
        for_each_name(fd.as_fd(), &mut buf[..80], |n| names.push(String::from_utf8(n.to_vec()).unwrap()));
        names.sort();
        assert_eq!(names, ["a", "a-rather-long-name-to-cross-the-record-alignment", "bb"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
