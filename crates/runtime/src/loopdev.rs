//! Loop devices: a regular file attached as a block device, so a filesystem image can be mounted (the
//! disk-bounded copy-on-write layer, see `layer::disk`). Host root only.
//!
//! A free device is asked of `/dev/loop-control` (`LOOP_CTL_GET_FREE`) and bound to the file in one ioctl
//! (`LOOP_CONFIGURE`, Linux 5.8) with `LO_FLAGS_AUTOCLEAR`: the kernel detaches the device by itself once its
//! last user is gone: our descriptor, closed right after the mount, and then the mount, when it is unmounted.
//! So no loop device outlives the mount, and a failed mount leaves none behind.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::failure::{os_error, os_error_text};
use sys::Errno;

/// `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
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

/// How often a device that another process took between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE` is asked for
/// again.
const ATTACH_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("cannot open /dev/loop-control: {} (the loop driver is missing: modprobe loop)", os_error_text(.0))]
    OpenControl(std::io::Error),
    #[error("cannot get a free loop device: {}", os_error_text(.0))]
    GetFree(std::io::Error),
    #[error("cannot open {}: {}", .0, os_error_text(.1))]
    OpenDevice(String, std::io::Error),
    #[error("cannot attach {} to {}: {}", .0, .1, os_error_text(.2))]
    Configure(String, String, std::io::Error),
}

/// An attached loop device, detached by the kernel once `fd` and every mount of it are gone (autoclear).
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: String,
    pub fd: OwnedFd,
}

/// Attaches the open file `image` (read-write) to a free loop device, with autoclear.
pub fn attach(image: RawFd, image_display: &str) -> Result<LoopDevice, LoopError> {
    let control = open_rw(c"/dev/loop-control").map_err(|e| LoopError::OpenControl(os_error(e)))?;
    let mut last = libc::EBUSY;
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; `control` is an open descriptor.
        let n = sys::check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) } as libc::c_long)
            .map_err(|e| LoopError::GetFree(os_error(e)))?;
        let path = format!("/dev/loop{n}");
        let cpath = CString::new(path.clone())
            .map_err(|_| LoopError::GetFree(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad device name")))?;
        let device = open_rw(&cpath).map_err(|e| LoopError::OpenDevice(path.clone(), os_error(e)))?;
        let config = LoopConfig {
            fd: image as u32,
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
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: file_name_field(image_display),
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (repr(C), the kernel's layout),
        // alive for the call; `device` and `image` are open descriptors.
        let ret = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        match sys::check(ret as libc::c_long) {
            Ok(_) => return Ok(LoopDevice { path, fd: device }),
            // Another process configured this device after we asked for it: ask again.
            Err(libc::EBUSY) => last = libc::EBUSY,
            Err(e) => return Err(LoopError::Configure(image_display.to_string(), path, os_error(e))),
        }
    }
    Err(LoopError::Configure(image_display.to_string(), "a free loop device".to_string(), os_error(last)))
}

/// `lo_file_name`: what `losetup -a` shows (truncated, NUL-terminated).
fn file_name_field(name: &str) -> [u8; LO_NAME_SIZE] {
    let mut field = [0u8; LO_NAME_SIZE];
    let bytes = name.as_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    field[..n].copy_from_slice(&bytes[..n]);
    field
}

fn open_rw(path: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    sys::fd::open(path, libc::O_RDWR | libc::O_CLOEXEC)
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
        let long = "x".repeat(100);
        let field = file_name_field(&long);
        assert_eq!(field[LO_NAME_SIZE - 1], 0);
        assert_eq!(field[0], b'x');
    }
}
