//! Loop devices: a regular file attached as a block device, so a filesystem image can be mounted (the
//! disk-bounded copy-on-write layer, see `layer::disk`). Host root only.
//!
//! A free device is asked of `/dev/loop-control` (`LOOP_CTL_GET_FREE`) and bound to the file in one ioctl
//! (`LOOP_CONFIGURE`, Linux 5.8) with `LO_FLAGS_AUTOCLEAR`: the kernel detaches the device by itself once its
//! last user is gone: our descriptor, closed right after the mount, and then the mount, when it is unmounted.
//! So no loop device outlives the mount, and a failed mount leaves none behind.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use runtime::failure::{os_error, os_error_text};
use sys::{loop_device, Errno};

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
pub fn attach(image: BorrowedFd<'_>, image_display: &str) -> Result<LoopDevice, LoopError> {
    let control = open_rw(c"/dev/loop-control").map_err(|e| LoopError::OpenControl(os_error(e)))?;
    let mut last = libc::EBUSY;
    for _ in 0..ATTACH_ATTEMPTS {
        let n = loop_device::get_free(control.as_fd()).map_err(|e| LoopError::GetFree(os_error(e)))?;
        let path = format!("/dev/loop{n}");
        let cpath = CString::new(path.clone())
            .map_err(|_| LoopError::GetFree(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad device name")))?;
        let device = open_rw(&cpath).map_err(|e| LoopError::OpenDevice(path.clone(), os_error(e)))?;
        let configured =
            loop_device::configure(device.as_fd(), image, loop_device::LO_FLAGS_AUTOCLEAR, image_display.as_bytes());
        match configured {
            Ok(()) => return Ok(LoopDevice { path, fd: device }),
            // Another process configured this device after we asked for it: ask again.
            Err(libc::EBUSY) => last = libc::EBUSY,
            Err(e) => return Err(LoopError::Configure(image_display.to_string(), path, os_error(e))),
        }
    }
    Err(LoopError::Configure(image_display.to_string(), "a free loop device".to_string(), os_error(last)))
}

fn open_rw(path: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    sys::fd::open(path, libc::O_RDWR | libc::O_CLOEXEC)
}
