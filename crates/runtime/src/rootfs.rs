//! The root overlay's host side (`--writable-root`, `Rootfs::Layers`), as host root: its directories made
//! idmapped in the sandbox's mount namespace, so that a file the image owns as 0 or 42 on disk is 0 or 42
//! inside, and what the sandbox writes in its layer is stored with the inside ids too (the layer keeps its
//! meaning whatever host id range a later run of the sandbox gets). Rootless there is nothing to do: the lowers
//! are the invoker's files and appear as root inside through the one-line map.
//!
//! How, after `clone` and the id maps, before init is released: `MOUNT_ATTR_IDMAP` needs `CAP_SYS_ADMIN` over
//! the host's filesystem, which init (born in the sandbox's user namespace) never has; and overlayfs takes a
//! layer only from a mount init may clone privately — one in init's mount namespace, or a detached one made
//! there — never a mount of the host's namespace. So the supervisor itself (single-threaded, with the host's
//! credentials) joins init's mount namespace for a moment, makes every mount in it private (nothing it does may
//! propagate to the host), mounts an idmapped clone of each directory over the directory itself, and returns to
//! its own namespace. Init, which has run nothing yet, then opens the same paths (`mounts::open_root_layers`)
//! and finds the idmapped mounts. (A helper process did this before: one fork more per start.)

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};

use crate::failure::errno_text;
use crate::plan::RootOverlayPlan;
use sys::mount::EMPTY;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot enter the sandbox's mount namespace to idmap its root layers: {}", errno_text(*.0))]
    EnterNamespace(i32),
    #[error("cannot make an idmapped mount of the root layer {path}: {}{}", errno_text(*.errno), idmap_hint(*.errno))]
    IdmapLayer { path: String, errno: i32 },
    #[error("cannot return to airlock's own mount namespace after idmapping the root layers: {}", errno_text(*.0))]
    LeaveNamespace(i32),
}

fn idmap_hint(errno: i32) -> &'static str {
    match errno {
        libc::EINVAL | libc::EPERM | libc::EOPNOTSUPP => {
            " (the filesystem holding it must support idmapped mounts: ext4, xfs, btrfs and tmpfs do; overlayfs and NFS do not)"
        }
        _ => "",
    }
}

/// As host root, before init is released (its maps written): the plan's lowers and layer directory become
/// idmapped mounts over themselves, in init's mount namespace, with init's user namespace's maps.
pub fn idmap_root_layers(pid: libc::pid_t, plan: &RootOverlayPlan) -> Result<(), RootfsError> {
    let paths: Vec<(&CString, &str)> = plan
        .lowers
        .iter()
        .zip(plan.lower_displays.iter().map(String::as_str))
        .chain(plan.layer.iter().zip(plan.layer_display.as_deref()))
        .collect();
    let open = |path: String, flags: i32| {
        let path = CString::new(path).map_err(|_| RootfsError::EnterNamespace(libc::EINVAL))?;
        sys::fd::open(&path, flags | libc::O_CLOEXEC).map_err(RootfsError::EnterNamespace)
    };
    let mount_ns = open(format!("/proc/{pid}/ns/mnt"), libc::O_RDONLY)?;
    let user_ns = open(format!("/proc/{pid}/ns/user"), libc::O_RDONLY)?;
    // Our own namespace and working directory, to come back to (setns into a mount namespace moves the caller
    // to that namespace's root).
    let own_ns = open("/proc/self/ns/mnt".to_owned(), libc::O_RDONLY)?;
    let cwd = open(".".to_owned(), libc::O_PATH | libc::O_DIRECTORY)?;
    // This process is single-threaded (setns refuses CLONE_NEWNS otherwise: threads share the root and cwd).
    sys::namespace::setns(mount_ns.as_fd(), libc::CLONE_NEWNS).map_err(RootfsError::EnterNamespace)?;
    let done = sys::mount::make_all_private().map_err(|e| (None, e)).and_then(|()| {
        paths.iter().try_for_each(|(path, display)| {
            idmap_over_itself(path, user_ns.as_raw_fd()).map_err(|e| (Some(*display), e))
        })
    });
    // Back whatever happened: nothing else the supervisor does may happen in the sandbox's namespace, so a
    // failure to return ends the run.
    sys::namespace::setns(own_ns.as_fd(), libc::CLONE_NEWNS).map_err(RootfsError::LeaveNamespace)?;
    sys::process::fchdir(cwd.as_raw_fd()).map_err(RootfsError::LeaveNamespace)?;
    done.map_err(|(display, errno)| match display {
        Some(path) => RootfsError::IdmapLayer { path: path.to_string(), errno },
        None => RootfsError::EnterNamespace(errno),
    })
}

/// An idmapped clone of `path` (not recursive: a mount below it stays out) attached over `path`.
fn idmap_over_itself(path: &CString, user_ns: i32) -> Result<(), sys::Errno> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let dir = sys::fd::openat2(libc::AT_FDCWD, path, flags, libc::RESOLVE_NO_SYMLINKS)?;
    let tree = sys::mount::open_tree(
        dir.as_raw_fd(),
        EMPTY,
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32,
    )?;
    sys::mount::mount_setattr_idmap(tree.as_raw_fd(), EMPTY, libc::AT_EMPTY_PATH as u32, user_ns)?;
    sys::mount::move_mount(
        tree.as_raw_fd(),
        EMPTY,
        dir.as_raw_fd(),
        EMPTY,
        libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
    )
}
