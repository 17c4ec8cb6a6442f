//! Claiming a sandbox's state: creating it, resuming it, holding its lock while it runs or while its layer
//! changes, and removing it.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::checkpoint::checkpoints;
use crate::error::StoreError;
use crate::human_size;
use crate::layout::{LayerDir, RootLayerDir, SandboxDir, StateDir};
use crate::record::{read_record, write_record, SandboxRecord};

/// A sandbox's state directory, claimed by this process for the run.
pub struct SandboxState {
    pub name: String,
    pub dir: SandboxDir,
    pub record: SandboxRecord,
    /// Held (flock) while the sandbox runs; dropped with this value.
    _lock: File,
    /// Claimed by `--resume` (its layer exists already).
    resumed: bool,
}

/// A sandbox's workspace as its record keeps it: the host path and the mode (`cow`, `rw`, `ro`).
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceRef<'a> {
    pub path: &'a str,
    pub mode: &'a str,
}

impl SandboxState {
    /// Creates the state of a new sandbox `name`. A sandbox of that name must not exist yet. `with_layer`: it
    /// gets a copy-on-write layer (empty `upper/` and `work/`).
    pub fn create(
        state: &StateDir,
        name: &str,
        workspace: Option<WorkspaceRef<'_>>,
        with_layer: bool,
    ) -> Result<SandboxState, StoreError> {
        let parent = state.sandboxes();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|source| StoreError::CreateStateDir { path: parent.clone(), source })?;
        let dir = state.sandbox(name);
        match fs::DirBuilder::new().mode(0o700).create(dir.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::SandboxExists { name: name.to_string() })
            }
            Err(source) => return Err(StoreError::CreateDir { path: dir.path().to_path_buf(), source }),
        }
        let lock = try_lock(&dir)?.ok_or_else(|| StoreError::BeingCreated { name: name.to_string() })?;
        if with_layer {
            // The overlay needs upper and work on one filesystem; airlock hands them to the sandbox's root.
            let layer = dir.plain_layer();
            for sub in [layer.upper(), layer.work()] {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&sub)
                    .map_err(|source| StoreError::CreateDir { path: sub.clone(), source })?;
            }
        }
        let record = SandboxRecord {
            name: name.to_string(),
            workspace: workspace.map(|w| w.path.to_string()),
            workspace_mode: workspace.map(|w| w.mode.to_string()),
            created: crate::now(),
            status: "running".to_string(),
            exit_code: None,
            init_pid: None,
            init_start_time: None,
            supervisor_pid: None,
            supervisor_start_time: None,
        };
        let claimed = SandboxState { name: name.to_string(), dir, record, _lock: lock, resumed: false };
        claimed.write_record()?;
        Ok(claimed)
    }

    /// Claims the kept sandbox `name` to run again in its layers (`airlock run --name NAME --resume`): it must
    /// have ended, and have been run with the same `cow` workspace.
    pub fn resume(
        state: &StateDir,
        name: &str,
        workspace: Option<WorkspaceRef<'_>>,
    ) -> Result<SandboxState, StoreError> {
        let dir = state.sandbox(name);
        if !dir.exists() {
            return Err(StoreError::ResumeMissing { name: name.to_string() });
        }
        let lock = try_lock(&dir)?.ok_or_else(|| StoreError::ResumeRunning { name: name.to_string() })?;
        let mut record = read_record(&dir)?;
        let workspace = workspace.ok_or(StoreError::ResumeWithoutWorkspace)?;
        if workspace.mode != "cow" || record.cow_workspace() != Some(workspace.path) {
            return Err(StoreError::ResumeOtherWorkspace {
                name: name.to_string(),
                workspace: record.workspace.clone().unwrap_or_else(|| "none".to_string()),
                mode: record.workspace_mode.clone().unwrap_or_else(|| "no".to_string()),
            });
        }
        let layer = dir.layer().map_err(|e| StoreError::Resume(Box::new(e)))?;
        ensure_layer_dirs(&layer)?;
        record.status = "running".to_string();
        let claimed = SandboxState { name: name.to_string(), dir, record, _lock: lock, resumed: true };
        claimed.write_record()?;
        Ok(claimed)
    }

    /// The layer's directories for the run. `disk` (`--disk`): a new sandbox's layer is made on an image of
    /// that size; a resumed one must have been made so, with that size (a bound cannot be added or changed later).
    pub fn layer_dirs(&self, disk: Option<u64>) -> Result<runtime::prepare::LayerDirs, StoreError> {
        let image = self.dir.layer_image();
        match (disk, self.dir.has_disk_layer()) {
            (Some(size), false) if !self.resumed => self.make_disk_layer(size)?,
            (Some(size), false) => {
                return Err(StoreError::DiskBoundAfterwards { size: human_size(size), name: self.name.clone() })
            }
            (Some(size), true) => {
                let had = crate::layer::disk::image_size(&image).map_err(StoreError::Disk)?;
                if had != size {
                    return Err(StoreError::DiskSizeChanged {
                        size: human_size(size),
                        name: self.name.clone(),
                        had: human_size(had),
                    });
                }
            }
            (None, _) => {}
        }
        let layer = self.dir.layer()?;
        let frozen = checkpoints(&self.dir)?.into_iter().rev().map(|c| c.dir).collect();
        Ok(runtime::prepare::LayerDirs { upper: layer.upper(), work: layer.work(), frozen })
    }

    /// A new sandbox's layer on an ext4 image of `size` bytes, mounted, holding empty `upper/` and `work/`.
    fn make_disk_layer(&self, size: u64) -> Result<(), StoreError> {
        // The plain layer directories `create` made give way to the image's (they are empty).
        let plain = self.dir.plain_layer();
        for sub in [plain.upper(), plain.work()] {
            let _ = fs::remove_dir(sub);
        }
        let image = self.dir.layer_image();
        crate::layer::disk::create_image(&image, size).map_err(StoreError::Disk)?;
        let layer = self.dir.layer()?;
        ensure_layer_dirs(&layer)
    }

    /// A resumed run that did not start: the sandbox is as it was.
    pub fn abandon(&mut self) -> Result<(), StoreError> {
        self.record.status = "exited".to_string();
        self.write_record()
    }

    /// Records how the run ended.
    pub fn finish(&mut self, exit_code: Option<i32>) -> Result<(), StoreError> {
        self.record.status = "exited".to_string();
        self.record.exit_code = exit_code;
        self.write_record()
    }

    /// Removes everything the sandbox kept.
    pub fn remove(self) -> Result<(), StoreError> {
        remove_sandbox(&self.dir)
    }

    /// See [`crate::record::write_profile`].
    pub fn write_profile(&self, profile: &policy::profile::Profile) -> Result<(), StoreError> {
        crate::record::write_profile(&self.dir, profile)
    }

    pub fn write_record(&self) -> Result<(), StoreError> {
        write_record(&self.dir, &self.record)
    }
}

/// Takes the sandbox's lock without waiting; `None` when a running airlock holds it.
fn try_lock(dir: &SandboxDir) -> Result<Option<File>, StoreError> {
    try_lock_file(&dir.lock_file())
}

/// Opens (creating it) and flocks a lock file without waiting; `None` when another process holds it.
pub(crate) fn try_lock_file(path: &Path) -> Result<Option<File>, StoreError> {
    runtime::host::try_lock_file(path).map_err(|source| StoreError::OpenLock { path: path.to_path_buf(), source })
}

/// Whether an airlock process runs the sandbox in `dir` now (it holds the lock).
pub fn is_running(dir: &SandboxDir) -> bool {
    matches!(try_lock(dir), Ok(None))
}

/// Every kept sandbox's name, sorted.
pub fn sandbox_names(state: &StateDir) -> Result<Vec<String>, StoreError> {
    let parent = state.sandboxes();
    let entries = match fs::read_dir(&parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::ReadDir { path: parent, source }),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| policy::names::validate_sandbox_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Removes a sandbox's directory. A disk-bounded layer is unmounted first (its loop device detaches itself), and
/// its image deleted with the rest. The overlay leaves `work/work` with mode 000; open it up first.
pub fn remove_sandbox(dir: &SandboxDir) -> Result<(), StoreError> {
    // Never recurse into a mounted layer: if it cannot be unmounted, nothing is removed.
    let mountpoint = dir.layer_mountpoint();
    crate::layer::disk::unmount(&mountpoint).map_err(StoreError::Disk)?;
    for inner_work in [dir.plain_layer().work().join("work"), dir.root_layer().work().join("work")] {
        if fs::symlink_metadata(&inner_work).is_ok_and(|m| m.is_dir()) {
            let _ = fs::set_permissions(&inner_work, fs::Permissions::from_mode(0o700));
        }
    }
    // remove_dir_all never follows symlinks, so nothing the sandbox planted in its layer leads outside.
    remove_tree(dir.path())
}

/// `remove_dir_all`, and rootless, where it is refused, again as root of a user namespace with the invoker's
/// subordinate ids mapped: a writable root's layer holds files the sandbox gave those ids (see
/// `runtime::userns::remove_tree_with_subordinate_ids`).
fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied && sys::process::effective_uid() != 0 => {
            runtime::userns::remove_tree_with_subordinate_ids(path).map_err(|helper| {
                StoreError::RemoveWithSubordinateIds { path: path.to_path_buf(), denied: source, source: helper }
            })
        }
        Err(source) => Err(StoreError::Remove { path: path.to_path_buf(), source }),
    }
}

/// Makes a writable root's layer (or finds it, for a sandbox that runs again): its directory, mode 0700 (as host
/// root, what the sandbox writes there keeps the ids it has inside, root's among them: no one else may reach
/// it), holding `upper/` (whose mode and owner are `/`'s inside) and `work/`. Returns the directory, for the
/// runtime.
pub fn make_root_layer(layer: &RootLayerDir) -> Result<PathBuf, StoreError> {
    let create = |path: &Path, mode: u32| match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(source) => Err(StoreError::CreateDir { path: path.to_path_buf(), source }),
    };
    if let Some(parent) = layer.path().parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| StoreError::CreateDir { path: parent.to_path_buf(), source })?;
    }
    create(layer.path(), 0o700)?;
    create(&layer.upper(), 0o755)?;
    create(&layer.work(), 0o700)?;
    Ok(layer.path().to_path_buf())
}

/// A new sandbox name: `sbx-` and eight hex digits from the kernel's random source.
pub fn generated_name() -> String {
    let mut bytes = [0u8; 4];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let value = match random {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(_) => std::process::id() ^ (crate::now() as u32),
    };
    format!("sbx-{value:08x}")
}

/// `upper/` and `work/` exist (a checkpoint killed between its rename and the new `upper/` left none).
fn ensure_layer_dirs(layer: &LayerDir) -> Result<(), StoreError> {
    for sub in [layer.upper(), layer.work()] {
        match fs::DirBuilder::new().mode(0o755).create(&sub) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::CreateDir { path: sub, source }),
        }
    }
    Ok(())
}

/// A kept sandbox's layer, claimed for a change that must not race another: its lock is held (so the sandbox is
/// not running and no other `airlock commit` or `run` uses it) until the value is dropped.
pub struct ClaimedLayer {
    pub name: String,
    pub layer: crate::layer::LayerStack,
    pub dir: SandboxDir,
    pub record: SandboxRecord,
    _lock: File,
}

/// The layer stack of a sandbox's state directory over `workspace`.
pub fn layer_stack(dir: &SandboxDir, workspace: &str) -> Result<crate::layer::LayerStack, StoreError> {
    let layer = dir.layer()?;
    Ok(crate::layer::LayerStack {
        upper: layer.upper(),
        frozen: checkpoints(dir)?.into_iter().rev().map(|c| c.dir).collect(),
        lower: PathBuf::from(workspace),
        scratch: layer.compose_scratch(),
    })
}

/// The layer of the kept sandbox `name` for a change of a sandbox that has ended (commit, discard, checkpoint,
/// rollback): as [`layer_of`] for a change, holding the lock.
pub fn claim_layer(state: &StateDir, name: &str) -> Result<ClaimedLayer, StoreError> {
    let layer = layer_of(state, name, true)?;
    let dir = state.sandbox(name);
    let lock = try_lock(&dir)?.ok_or_else(|| StoreError::LayerBusy { name: name.to_string() })?;
    let record = read_record(&dir)?;
    Ok(ClaimedLayer { name: name.to_string(), layer, dir, record, _lock: lock })
}

/// The copy-on-write layer of the kept sandbox `name`, for `diff` and `discard`. `for_change`: the layer is
/// about to be modified, which overlayfs forbids while the sandbox runs (its overlay is mounted).
pub fn layer_of(state: &StateDir, name: &str, for_change: bool) -> Result<crate::layer::LayerStack, StoreError> {
    policy::names::validate_sandbox_name(name).map_err(StoreError::InvalidName)?;
    let dir = state.sandbox(name);
    if !dir.exists() {
        return Err(StoreError::NoSuchSandbox { name: name.to_string() });
    }
    let record = read_record(&dir)?;
    let Some(workspace) = record.cow_workspace() else {
        return Err(StoreError::NoCowWorkspace { name: name.to_string() });
    };
    if for_change && is_running(&dir) {
        return Err(StoreError::ChangeWhileRunning { name: name.to_string() });
    }
    layer_stack(&dir, workspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> StateDir {
        let path = std::env::temp_dir().join(format!("airlock-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        StateDir::at(path)
    }

    #[test]
    fn a_created_sandbox_is_running_until_its_claim_is_dropped() {
        let state = scratch("claim");
        let ws = WorkspaceRef { path: "/w", mode: "cow" };
        let claimed = SandboxState::create(&state, "a", Some(ws), true).unwrap();
        assert!(claimed.dir.plain_layer().upper().is_dir());
        assert!(is_running(&claimed.dir));
        assert!(matches!(SandboxState::create(&state, "a", Some(ws), true), Err(StoreError::SandboxExists { .. })));
        assert!(matches!(SandboxState::resume(&state, "a", Some(ws)), Err(StoreError::ResumeRunning { .. })));
        let dir = claimed.dir.clone();
        drop(claimed);
        assert!(!is_running(&dir));
        assert_eq!(sandbox_names(&state).unwrap(), vec!["a".to_string()]);
        let other = WorkspaceRef { path: "/elsewhere", mode: "cow" };
        assert!(matches!(SandboxState::resume(&state, "a", Some(other)), Err(StoreError::ResumeOtherWorkspace { .. })));
        let resumed = SandboxState::resume(&state, "a", Some(ws)).unwrap();
        assert_eq!(resumed.record.status, "running");
        resumed.remove().unwrap();
        assert!(sandbox_names(&state).unwrap().is_empty());
        let _ = fs::remove_dir_all(state.path());
    }

    #[test]
    fn a_layer_of_a_sandbox_without_a_cow_workspace_is_refused() {
        let state = scratch("nocow");
        let claimed = SandboxState::create(&state, "b", Some(WorkspaceRef { path: "/w", mode: "rw" }), false).unwrap();
        drop(claimed);
        assert!(matches!(layer_of(&state, "b", false), Err(StoreError::NoCowWorkspace { .. })));
        assert!(matches!(layer_of(&state, "zz", false), Err(StoreError::NoSuchSandbox { .. })));
        assert!(matches!(layer_of(&state, "../x", false), Err(StoreError::InvalidName(_))));
        let _ = fs::remove_dir_all(state.path());
    }

    #[test]
    fn generated_names_are_valid_sandbox_names() {
        let name = generated_name();
        assert!(name.starts_with("sbx-") && name.len() == 12, "{name}");
        policy::names::validate_sandbox_name(&name).unwrap();
    }
}
