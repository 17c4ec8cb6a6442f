//! Loop devices: a free one asked of `/dev/loop-control` (`LOOP_CTL_GET_FREE`), and a device bound to a backing
//! file in one ioctl (`LOOP_CONFIGURE`, Linux 5.8).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// The kernel detaches the device by itself once its last user (descriptor or mount) is gone.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `ioctl(control, LOOP_CTL_GET_FREE)`: the number N of a free `/dev/loopN` (`control` is `/dev/loop-control`).
pub fn get_free(control: BorrowedFd<'_>) -> Result<u32, Errno> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; `control` is borrowed, so open.
    let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) } as libc::c_long)?;
    u32::try_from(n).map_err(|_| libc::EINVAL)
}

/// `ioctl(device, LOOP_CONFIGURE)`: binds the loop device to the open file `backing`, whole and read-write, with
/// `flags` (`LO_FLAGS_*`); `file_name` is what `losetup -a` shows (cut to fit, NUL-terminated). `EBUSY`: the
/// device is bound already.
pub fn configure(device: BorrowedFd<'_>, backing: BorrowedFd<'_>, flags: u32, file_name: &[u8]) -> Result<(), Errno> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: file_name_field(file_name),
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (repr(C), the kernel's layout),
    // alive for the call; both descriptors are borrowed, so open.
    let ret = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
    check(ret as libc::c_long).map(drop)
}

/// `lo_file_name`: the name, truncated, NUL-terminated.
fn file_name_field(name: &[u8]) -> [u8; LO_NAME_SIZE] {
    let mut field = [0u8; LO_NAME_SIZE];
    let n = name.len().min(LO_NAME_SIZE - 1);
    field[..n].copy_from_slice(&name[..n]);
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_the_kernels_layout() {
        // <linux/loop.h>: loop_info64 is 232 bytes, loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn long_file_names_are_cut_and_terminated() {
        let long = [b'x'; 100];
        let field = file_name_field(&long);
        assert_eq!(field[LO_NAME_SIZE - 1], 0);
        assert_eq!(field[0], b'x');
    }
}
