//! The on-disk layout, in one place. Under the state directory `$STATE`:
//!
//! ```text
//! $STATE/sandboxes/NAME/
//!     sandbox.json          what the sandbox is (record::SandboxRecord), replaced atomically
//!     lock                  flock'd while the sandbox runs, or while a command changes its layer
//!     layer.lock            flock'd while a live checkpoint, rollback, commit or discard changes a running layer
//!     profile.json          the merged profile of a long-lived sandbox (`airlock exec` plans from it)
//!     stats.json            final resource numbers
//!     audit.jsonl           the audit log
//!     supervisor.log        a long-lived sandbox's supervisor's stderr
//!     agent.sock            the exec agent's socket (served by a fork of the supervisor; the daemon's fast exec), 0600
//!     agent.lock            flock'd by the process that serves the exec agent, while it does
//!     upper/ work/          the copy-on-write layer (overlayfs upperdir and workdir)
//!     layers/N-LABEL/       checkpoints: frozen layers, with layers/N-LABEL.created (unix time)
//!     layer.img, layer/     with --disk: the layer lives on an ext4 image mounted at layer/ (holding upper/,
//!                           work/, layers/)
//!     rootfs/upper/ rootfs/work/
//!                           --writable-root: the root overlay's layer (what the sandbox changed in `/`)
//! ```
//!
//! `$STATE` is `$AIRLOCK_STATE_DIR`, else `/var/lib/airlock` for root and `$XDG_STATE_HOME/airlock`
//! (`~/.local/state/airlock`) for other users.

use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Where airlock keeps state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state directory this process uses: `$AIRLOCK_STATE_DIR`, else the per-user default.
    pub fn from_env() -> StateDir {
        if let Some(dir) = std::env::var_os("AIRLOCK_STATE_DIR") {
            return StateDir::at(PathBuf::from(dir));
        }
        if runtime::host::is_host_root() {
            return StateDir::at(PathBuf::from("/var/lib/airlock"));
        }
        let path = match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
            (Some(xdg), _) => PathBuf::from(xdg).join("airlock"),
            (None, Some(home)) => PathBuf::from(home).join(".local/state/airlock"),
            (None, None) => PathBuf::from("/tmp/airlock-state"),
        };
        StateDir::at(path)
    }

    pub fn at(path: PathBuf) -> StateDir {
        StateDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding every kept sandbox's directory.
    pub fn sandboxes(&self) -> PathBuf {
        self.path.join("sandboxes")
    }

    /// The directory of the sandbox called `name` (validated by the caller).
    pub fn sandbox(&self, name: &str) -> SandboxDir {
        SandboxDir { path: self.sandboxes().join(name) }
    }

    /// Where `airlock run --learn` writes the records of one run (`pid`: the run's).
    pub fn learn_file(&self, pid: u32) -> PathBuf {
        self.path.join(format!("learn-{pid}.jsonl"))
    }
}

/// One sandbox's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir {
    path: PathBuf,
}

/// The image of a disk-bounded layer, in the sandbox's directory.
const LAYER_IMAGE: &str = "layer.img";
/// Where that image is mounted, in the sandbox's directory.
const LAYER_MOUNT: &str = "layer";

impl SandboxDir {
    pub fn at(path: PathBuf) -> SandboxDir {
        SandboxDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the sandbox exists (its directory does).
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn record_file(&self) -> PathBuf {
        self.path.join("sandbox.json")
    }

    /// Where a new record is written before it is renamed over the old one.
    pub(crate) fn staged_record_file(&self) -> PathBuf {
        self.path.join(".sandbox.json.tmp")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.path.join("lock")
    }

    pub fn layer_lock_file(&self) -> PathBuf {
        self.path.join("layer.lock")
    }

    pub fn profile_file(&self) -> PathBuf {
        self.path.join("profile.json")
    }

    pub fn stats_file(&self) -> PathBuf {
        self.path.join("stats.json")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path.join("audit.jsonl")
    }

    pub fn supervisor_log(&self) -> PathBuf {
        self.path.join("supervisor.log")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }

    pub fn agent_lock_file(&self) -> PathBuf {
        self.path.join("agent.lock")
    }

    /// A running `--isolation vm` sandbox's: where its `cow` workspace's overlay is mounted in its QEMU's mount
    /// namespace (one line, the path; written by its supervisor).
    pub fn vm_workspace_mount_file(&self) -> PathBuf {
        self.path.join("vm-workspace-mount")
    }

    /// Any other file the sandbox keeps (named by its owner, e.g. the audit log's copy marker).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn layer_image(&self) -> PathBuf {
        self.path.join(LAYER_IMAGE)
    }

    pub fn layer_mountpoint(&self) -> PathBuf {
        self.path.join(LAYER_MOUNT)
    }

    /// Whether the layer lives on a disk image (`--disk`).
    pub fn has_disk_layer(&self) -> bool {
        std::fs::symlink_metadata(self.layer_image()).is_ok()
    }

    /// The directory holding the sandbox's `upper/`, `work/` and `layers/`: its own directory, or for a
    /// disk-bounded layer the mounted image, mounted first if it is not (after a reboot; as host root only).
    /// Every command that reads or changes the layer goes through this.
    pub fn layer(&self) -> Result<LayerDir, StoreError> {
        if !self.has_disk_layer() {
            return Ok(LayerDir { root: self.path.clone() });
        }
        let mountpoint = self.layer_mountpoint();
        crate::layer::disk::ensure_mounted(&self.layer_image(), &mountpoint)
            .map_err(|source| StoreError::MountDiskLayer { dir: self.path.clone(), source })?;
        Ok(LayerDir { root: mountpoint })
    }

    /// The writable root's layer (`--writable-root`): kept with the sandbox, removed with it.
    pub fn root_layer(&self) -> RootLayerDir {
        RootLayerDir { root: self.path.join("rootfs") }
    }

    /// The layer's directories as they are when the layer is not an image (for a sandbox being made).
    pub(crate) fn plain_layer(&self) -> LayerDir {
        LayerDir { root: self.path.clone() }
    }
}

/// The directory holding a sandbox's copy-on-write layer and checkpoints (see [`SandboxDir::layer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDir {
    root: PathBuf,
}

impl LayerDir {
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The overlay's upper directory: the sandbox's changes since the last checkpoint.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The overlay's work directory (same filesystem as `upper`, emptied whenever the upper is replaced).
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The checkpoints' directory.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Checkpoint `index`'s frozen layer.
    pub fn checkpoint(&self, index: u32, label: &str) -> PathBuf {
        self.layers().join(checkpoint_name(index, label))
    }

    /// The file holding when checkpoint `index` was taken.
    pub fn checkpoint_created(&self, index: u32, label: &str) -> PathBuf {
        self.layers().join(format!("{}.created", checkpoint_name(index, label)))
    }

    /// A per-process directory beside the layers (same filesystem: renames into it are atomic), for what a
    /// transaction moves out of the way (`what`: the transaction).
    pub fn aside(&self, what: &str) -> PathBuf {
        self.root.join(format!("{what}.{}", std::process::id()))
    }

    /// Where a diff or commit composes the layers (per process: two at once must not share it; beside the
    /// layers: it holds hard links to them).
    pub fn compose_scratch(&self) -> PathBuf {
        self.root.join(format!("compose.{}", std::process::id()))
    }
}

/// The directory holding a writable root's overlay `upper/` and `work/` (one filesystem, as overlayfs needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootLayerDir {
    root: PathBuf,
}

impl RootLayerDir {
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// What the sandbox changed in `/`.
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// The overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// `N-LABEL`: a checkpoint's directory name.
pub(crate) fn checkpoint_name(index: u32, label: &str) -> String {
    format!("{index}-{label}")
}

/// Parses a checkpoint's directory name back into its index and label.
pub(crate) fn parse_checkpoint_name(name: &str) -> Option<(u32, &str)> {
    let (index, label) = name.split_once('-')?;
    Some((index.parse().ok()?, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_its_sandbox() {
        let state = StateDir::at(PathBuf::from("/s"));
        let dir = state.sandbox("a");
        assert_eq!(dir.path(), Path::new("/s/sandboxes/a"));
        assert_eq!(dir.record_file(), Path::new("/s/sandboxes/a/sandbox.json"));
        assert_eq!(dir.layer_image(), Path::new("/s/sandboxes/a/layer.img"));
        let layer = dir.plain_layer();
        assert_eq!(layer.upper(), Path::new("/s/sandboxes/a/upper"));
        assert_eq!(layer.checkpoint(3, "x"), Path::new("/s/sandboxes/a/layers/3-x"));
        assert_eq!(layer.checkpoint_created(3, "x"), Path::new("/s/sandboxes/a/layers/3-x.created"));
        assert_eq!(dir.root_layer().upper(), Path::new("/s/sandboxes/a/rootfs/upper"));
        assert_eq!(dir.root_layer().work(), Path::new("/s/sandboxes/a/rootfs/work"));
    }

    #[test]
    fn checkpoint_names_round_trip() {
        assert_eq!(parse_checkpoint_name(&checkpoint_name(12, "before-tests")), Some((12, "before-tests")));
        assert_eq!(parse_checkpoint_name("x-1"), None);
        assert_eq!(parse_checkpoint_name("7"), None);
    }
}
