//! Checkpoints and the transactions that change a sandbox's layers.
//!
//! A checkpoint freezes the sandbox's upper directory as a read-only layer: `upper/` is renamed to
//! `layers/N-LABEL/` and a fresh empty `upper/` (and an emptied `work/`) take its place. The next run stacks the
//! frozen layers under the new upper (`lowerdir=layers/N:...:layers/1:WORKSPACE`), so a checkpoint costs one
//! rename whatever the workspace's size. A rollback to LABEL deletes the layers newer than it and empties
//! `upper/`: the workspace shows exactly what it showed right after the checkpoint LABEL was taken.
//!
//! Both change the layers, which overlayfs forbids while they are mounted. For a running long-lived sandbox
//! (`airlock create`) they replace its workspace overlay in place (see `layer::live`): its processes are
//! stopped, the old overlay made read-only, the directories renamed on the host, a new overlay mounted in its
//! place, and the processes continued. Every such transaction records each rename it made and, on failure,
//! undoes them in reverse before the processes continue: the sandbox is left as it was. A commit or discard of a
//! running sandbox ([`change`]) works on copies of the layers (hard links) and swaps them in. A running
//! `airlock run` sandbox is refused: its init is not recorded.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::layer::live::{LiveError, LiveSandbox, NewStack};
use crate::layer::live_vm::LiveVm;

use crate::error::StoreError;
use crate::layout::{self, LayerDir, SandboxDir, StateDir};
use crate::record::{read_profile, read_record};
use crate::sandbox::{claim_layer, is_running, try_lock_file};

/// How many checkpoints one sandbox stacks (the overlay's lower layers, opened into a fixed-size array).
pub const MAX_CHECKPOINTS: usize = runtime::plan::MAX_FROZEN_LAYERS;

/// One checkpoint: a frozen layer `layers/N-LABEL/`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub index: u32,
    pub label: String,
    pub dir: PathBuf,
    /// Unix time it was taken (from `layers/N-LABEL.created`).
    pub created: Option<f64>,
}

/// A sandbox's checkpoints, oldest first.
pub fn checkpoints(dir: &SandboxDir) -> Result<Vec<Checkpoint>, StoreError> {
    let layer = dir.layer()?;
    let layers = layer.layers();
    let entries = match fs::read_dir(&layers) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::ReadDir { path: layers, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::ReadDir { path: layers.clone(), source })?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some((index, label)) = layout::parse_checkpoint_name(&name) else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let created =
            fs::read_to_string(layer.checkpoint_created(index, label)).ok().and_then(|t| t.trim().parse().ok());
        found.push(Checkpoint { index, label: label.to_string(), dir: entry.path(), created });
    }
    found.sort_by_key(|c| c.index);
    Ok(found)
}

/// A checkpoint just taken.
#[derive(Debug)]
pub struct Taken {
    pub label: String,
    /// Its frozen layer.
    pub frozen: PathBuf,
    /// The sandbox's host workspace (the layer's lower directory).
    pub workspace: PathBuf,
    /// It was taken of a running sandbox (its overlay was replaced in place).
    pub running: bool,
}

/// Whether the sandbox `name` runs now (then its overlay is mounted, and a change of its layers is live).
pub fn is_sandbox_running(state: &StateDir, name: &str) -> Result<bool, StoreError> {
    policy::names::validate_sandbox_name(name).map_err(StoreError::InvalidName)?;
    let dir = state.sandbox(name);
    Ok(dir.exists() && is_running(&dir))
}

/// `airlock checkpoint NAME [LABEL]`: of a sandbox that has ended (holding its lock), or live.
pub fn take(state: &StateDir, name: &str, label: Option<&str>) -> Result<Taken, StoreError> {
    if is_sandbox_running(state, name)? {
        return take_running(state, name, label);
    }
    let claim = claim_layer(state, name)?;
    let (index, label) = next_checkpoint(&claim.dir, name, label)?;
    let layer = claim.dir.layer()?;
    ensure_layers_dir(&layer)?;
    let upper = layer.upper();
    // The new upper belongs to whoever owned the old one: the sandbox root's host id (as host root).
    let owner = stat(&upper)?;
    let frozen = layer.checkpoint(index, &label);
    write_created(&layer.checkpoint_created(index, &label))?;
    // The checkpoint itself: one rename. Then the new empty upper; a stale work dir would confuse the overlay.
    rename(&upper, &frozen)?;
    make_dir_like(&upper, &owner)?;
    empty_work(&layer.work())?;
    Ok(Taken { label, frozen, workspace: claim.layer.lower.clone(), running: false })
}

/// `airlock rollback NAME LABEL`: of a sandbox that has ended, or live. Returns whether it was running.
pub fn roll_back(state: &StateDir, name: &str, label: &str) -> Result<bool, StoreError> {
    if is_sandbox_running(state, name)? {
        return roll_back_running(state, name, label).map(|()| true);
    }
    let claim = claim_layer(state, name)?;
    let layer = claim.dir.layer()?;
    let all = checkpoints(&claim.dir)?;
    let Some(target) = all.iter().find(|c| c.label == label) else {
        return Err(StoreError::NoSuchCheckpoint { name: name.to_string(), label: label.to_string() });
    };
    // Newest first: a rollback killed half way leaves a prefix of the stack, and running it again finishes.
    for newer in all.iter().rev().filter(|c| c.index > target.index) {
        crate::layer::remove_path(&newer.dir).map_err(|source| StoreError::RemoveCheckpoint {
            label: newer.label.clone(),
            path: newer.dir.clone(),
            source,
        })?;
        let _ = fs::remove_file(layer.checkpoint_created(newer.index, &newer.label));
    }
    let upper = layer.upper();
    crate::layer::clear_dir(&upper).map_err(|source| StoreError::Empty { path: upper.clone(), source })?;
    empty_work(&layer.work())?;
    Ok(false)
}

/// The next checkpoint's index and label (LABEL, or `cN`), checked: valid, unique, room in the stack.
fn next_checkpoint(dir: &SandboxDir, name: &str, label: Option<&str>) -> Result<(u32, String), StoreError> {
    let existing = checkpoints(dir)?;
    if existing.len() >= MAX_CHECKPOINTS {
        return Err(StoreError::TooManyCheckpoints { name: name.to_string(), count: existing.len() });
    }
    let index = existing.last().map_or(1, |c| c.index + 1);
    let label = match label {
        Some(label) => label.to_string(),
        None => format!("c{index}"),
    };
    policy::names::validate_sandbox_name(&label)
        .map_err(|e| StoreError::InvalidLabel { label: label.clone(), reason: e.to_string() })?;
    if existing.iter().any(|c| c.label == label) {
        return Err(StoreError::DuplicateLabel { name: name.to_string(), label });
    }
    Ok((index, label))
}

fn ensure_layers_dir(layer: &LayerDir) -> Result<(), StoreError> {
    let layers = layer.layers();
    match fs::DirBuilder::new().create(&layers) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateDir { path: layers, source }),
    }
}

fn write_created(path: &Path) -> Result<(), StoreError> {
    fs::write(path, format!("{}\n", crate::now()))
        .map_err(|source| StoreError::WriteFile { path: path.to_path_buf(), source })
}

fn stat(path: &Path) -> Result<fs::Metadata, StoreError> {
    fs::symlink_metadata(path).map_err(|source| StoreError::ReadFile { path: path.to_path_buf(), source })
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|source| StoreError::Rename { from: from.to_path_buf(), to: to.to_path_buf(), source })
}

/// A new empty directory `path` with the mode and owner of `like` (the old upper: the sandbox root's host id).
fn make_dir_like(path: &Path, like: &fs::Metadata) -> Result<(), StoreError> {
    fs::create_dir(path).map_err(|source| StoreError::CreateDir { path: path.to_path_buf(), source })?;
    fs::set_permissions(path, fs::Permissions::from_mode(like.mode() & 0o7777))
        .map_err(|source| StoreError::SetMode { path: path.to_path_buf(), source })?;
    std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))
        .map_err(|source| StoreError::SetOwner { path: path.to_path_buf(), source })
}

/// Empties the overlay's work directory (its `work/work` has mode 000, which its owner opens up first).
fn empty_work(work: &Path) -> Result<(), StoreError> {
    let inner = work.join("work");
    if fs::symlink_metadata(&inner).is_ok_and(|m| m.is_dir()) {
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o700))
            .map_err(|source| StoreError::OpenUp { path: inner.clone(), source })?;
    }
    if work.is_dir() {
        crate::layer::clear_dir(work).map_err(|source| StoreError::Empty { path: work.to_path_buf(), source })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// A running long-lived sandbox: the overlay is replaced in place (layer::live).

/// What a live checkpoint, rollback or change needs: the sandbox's init, its workspace, its layer's directory,
/// and the lock that keeps two of them apart.
struct RunningLayer {
    name: String,
    live: Live,
    workspace: String,
    workspace_c: CString,
    layer: LayerDir,
    dir: SandboxDir,
    /// When the sandbox was created (a commit's conflicts are host files changed after it).
    created: f64,
    _lock: fs::File,
}

fn running_layer(state: &StateDir, name: &str, what: &str) -> Result<RunningLayer, StoreError> {
    let dir = state.sandbox(name);
    let record = read_record(&dir)?;
    let (Some(init_pid), Some(init_start_time)) = (record.init_pid, record.init_start_time) else {
        return Err(StoreError::RunningUnderRun { name: name.to_string(), what: what.to_string() });
    };
    let Some(workspace) = record.cow_workspace().map(str::to_string) else {
        return Err(StoreError::NoCowWorkspace { name: name.to_string() });
    };
    // A mount inside the workspace (--bind, --tmpfs) sits on the old overlay and would go with it.
    let profile = read_profile(&dir)?;
    if let Some(dest) = mount_inside(&profile.filesystem, &workspace) {
        return Err(StoreError::MountInsideWorkspace { name: name.to_string(), dest, what: what.to_string() });
    }
    let lock = try_lock_file(&dir.layer_lock_file())?
        .ok_or_else(|| StoreError::LayerChangeInProgress { name: name.to_string() })?;
    let layer = dir.layer()?;
    // A VM's recorded init is its QEMU, whose mount namespace holds the overlay (see `layer::live_vm`).
    let vm = profile.isolation().is_ok_and(|i| i == policy::sandbox::Isolation::Vm);
    let live = match vm {
        true => {
            let file = dir.vm_workspace_mount_file();
            let mount_point =
                fs::read_to_string(&file).map_err(|source| StoreError::ReadFile { path: file.clone(), source })?;
            Live::Vm(LiveVm::open(name, init_pid, init_start_time, Path::new(mount_point.trim_end_matches('\n')))?)
        }
        false => Live::Namespaces(LiveSandbox::open(name, init_pid, init_start_time)?),
    };
    let workspace_c = CString::new(workspace.clone()).map_err(|_| StoreError::NulInPath { path: workspace.clone() })?;
    Ok(RunningLayer {
        name: name.to_string(),
        live,
        workspace,
        workspace_c,
        layer,
        dir,
        created: record.created,
        _lock: lock,
    })
}

/// The first `--bind`, `--ro-bind` or `--tmpfs` destination inside `workspace`.
fn mount_inside(fsys: &policy::profile::FilesystemSection, workspace: &str) -> Option<String> {
    let inside = format!("{}/", workspace.trim_end_matches('/'));
    fsys.bind.iter().chain(&fsys.ro_bind).chain(&fsys.tmpfs).find_map(|spec| {
        let dest = spec.split_once(':').map_or(spec.as_str(), |(src, rest)| {
            // --bind SRC[:DST], --tmpfs DST[:SIZE]: the destination is the part that is a path.
            if rest.starts_with('/') {
                rest
            } else {
                src
            }
        });
        dest.starts_with(&inside).then(|| dest.to_string())
    })
}

/// How a running sandbox's overlay is replaced: in its own namespaces, or in its QEMU's.
enum Live {
    Namespaces(LiveSandbox),
    Vm(LiveVm),
}

impl Live {
    fn freeze(&self, workspace: &std::ffi::CStr) -> Result<(), LiveError> {
        match self {
            Live::Namespaces(live) => live.freeze(workspace),
            Live::Vm(live) => live.freeze(),
        }
    }

    fn swap(&self, workspace: &std::ffi::CStr, stack: &NewStack) -> Result<(), LiveError> {
        match self {
            Live::Namespaces(live) => live.swap(workspace, stack),
            Live::Vm(live) => live.swap(stack),
        }
    }

    fn thaw(&self, workspace: &std::ffi::CStr) -> Result<(), LiveError> {
        match self {
            Live::Namespaces(live) => live.thaw(workspace),
            Live::Vm(live) => live.thaw(),
        }
    }
}

impl RunningLayer {
    /// Stops the sandbox's processes and makes its overlay read-only (`action`: for the error).
    fn freeze(&self, action: &str) -> Result<(), StoreError> {
        self.live.freeze(&self.workspace_c).map_err(|source| StoreError::Freeze {
            action: action.to_string(),
            name: self.name.clone(),
            source,
        })
    }

    /// The new overlay over `upper`, `work`, `frozen` (newest first) and the workspace, in place of the old.
    fn swap(&self, upper: &Path, work: &Path, frozen: &[PathBuf]) -> Result<(), StoreError> {
        let c = |path: &Path| {
            CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| StoreError::NulInPath { path: path.display().to_string() })
        };
        let stack = NewStack {
            upper: c(upper)?,
            work: c(work)?,
            frozen: frozen.iter().map(|p| c(p)).collect::<Result<_, _>>()?,
            lower: c(Path::new(&self.workspace))?,
            // The supervisor gives an idmapped layer root inside's own id, 0, on disk (the sandbox's host range
            // is never 0): such a layer is mounted idmapped again (see `runtime::rootfs`). A VM's never is.
            idmapped_layer: match (&self.live, stat(upper)?.uid()) {
                (Live::Namespaces(_), 0) => Some(c(upper.parent().unwrap_or(Path::new("/")))?),
                _ => None,
            },
        };
        Ok(self.live.swap(&self.workspace_c, &stack)?)
    }

    /// The error of a transaction whose changes were undone: the processes are continued, and if that fails too
    /// the error says how to recover.
    fn undone_and_thawed(&self, action: &str, e: StoreError) -> StoreError {
        let e = StoreError::Undone { action: action.to_string(), name: self.name.clone(), source: Box::new(e) };
        self.thawed_or(e)
    }

    /// `e`, after continuing the processes; with how to recover when they cannot be continued.
    fn thawed_or(&self, e: StoreError) -> StoreError {
        match self.live.thaw(&self.workspace_c) {
            Ok(()) => e,
            Err(thaw) => StoreError::NotThawed { thaw, name: self.name.clone(), source: Box::new(e) },
        }
    }

    /// A scratch directory beside the layers for what a transaction takes out of the way.
    fn aside(&self, what: &str) -> Result<PathBuf, StoreError> {
        let aside = self.layer.aside(what);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&aside)
            .map_err(|source| StoreError::CreateDir { path: aside.clone(), source })?;
        Ok(aside)
    }
}

/// Removes what was put aside (an old work dir's `work/work` has mode 000: opened up first).
fn remove_aside(aside: &Path) {
    let _ = empty_work(&aside.join("work"));
    let _ = crate::layer::remove_path(aside);
}

/// Renames, remembered so that they can be undone in reverse.
#[derive(Default)]
struct Renames {
    done: Vec<(PathBuf, PathBuf)>,
}

impl Renames {
    /// `from` to `to`; `aside`: the error says the path was moved aside.
    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), StoreError> {
        fs::rename(from, to).map_err(|source| StoreError::Move {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })?;
        self.done.push((from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn moved(&self, path: &Path) -> bool {
        self.done.iter().any(|(from, _)| from == path)
    }

    /// Every rename undone, newest first (best effort: this runs on an error path).
    fn undo(&self) {
        for (from, to) in self.done.iter().rev() {
            let _ = fs::rename(to, from);
        }
    }
}

/// Checkpoint of a running sandbox: freeze, rename upper to the checkpoint and work aside, fresh upper and
/// work, the new overlay in place, continue. Any failure puts every directory back and continues.
fn take_running(state: &StateDir, name: &str, label: Option<&str>) -> Result<Taken, StoreError> {
    let running = running_layer(state, name, "checkpoint")?;
    let (index, label) = next_checkpoint(&running.dir, name, label)?;
    let layer = &running.layer;
    ensure_layers_dir(layer)?;
    let (upper, work) = (layer.upper(), layer.work());
    let owner = stat(&upper)?;
    let frozen = layer.checkpoint(index, &label);
    let created = layer.checkpoint_created(index, &label);
    let aside = running.aside("checkpoint")?;
    let mut renames = Renames::default();

    if let Err(e) = running.freeze("checkpoint") {
        // Refused (a file open for writing, say): the sandbox runs on as it was, and nothing stays aside.
        let _ = fs::remove_dir(&aside);
        return Err(e);
    }
    // Frozen: nothing in the sandbox writes, and its overlay is read-only.
    let swapped = (|| -> Result<(), StoreError> {
        write_created(&created)?;
        renames.rename(&upper, &frozen)?;
        renames.rename(&work, &aside.join("work"))?;
        make_dir_like(&upper, &owner)?;
        make_dir_like(&work, &owner)?;
        let stack: Vec<PathBuf> = checkpoints(&running.dir)?.into_iter().rev().map(|c| c.dir).collect();
        running.swap(&upper, &work, &stack)
    })();
    if let Err(e) = swapped {
        // Back as it was: the old upper and work (the old overlay still uses them), then continue.
        for new in [&upper, &work] {
            if renames.moved(new) {
                let _ = fs::remove_dir(new);
            }
        }
        renames.undo();
        let _ = fs::remove_file(&created);
        let _ = fs::remove_dir(&aside);
        return Err(running.undone_and_thawed("checkpoint", e));
    }
    remove_aside(&aside);
    Ok(Taken { label, frozen, workspace: PathBuf::from(&running.workspace), running: true })
}

/// Rollback of a running sandbox: freeze, move upper, work and the newer checkpoints aside, fresh upper and
/// work, the new overlay (over the layers up to LABEL) in place, continue; then what was put aside is deleted.
/// Any failure before the swap puts everything back.
fn roll_back_running(state: &StateDir, name: &str, label: &str) -> Result<(), StoreError> {
    let running = running_layer(state, name, "rollback")?;
    let layer = &running.layer;
    let all = checkpoints(&running.dir)?;
    let Some(target) = all.iter().find(|c| c.label == label) else {
        return Err(StoreError::NoSuchCheckpoint { name: name.to_string(), label: label.to_string() });
    };
    let newer: Vec<&Checkpoint> = all.iter().filter(|c| c.index > target.index).collect();
    let kept: Vec<PathBuf> = all.iter().rev().filter(|c| c.index <= target.index).map(|c| c.dir.clone()).collect();
    let (upper, work) = (layer.upper(), layer.work());
    let owner = stat(&upper)?;
    let aside = running.aside("rollback")?;
    let mut renames = Renames::default();

    if let Err(e) = running.freeze("roll back") {
        // Refused (a file open for writing, say): the sandbox runs on as it was, and nothing stays aside.
        let _ = fs::remove_dir(&aside);
        return Err(e);
    }
    let swapped = (|| -> Result<(), StoreError> {
        renames.rename(&upper, &aside.join("upper"))?;
        renames.rename(&work, &aside.join("work"))?;
        for c in &newer {
            let base = layout::checkpoint_name(c.index, &c.label);
            renames.rename(&c.dir, &aside.join(&base))?;
            let created = layer.checkpoint_created(c.index, &c.label);
            if created.exists() {
                renames.rename(&created, &aside.join(format!("{base}.created")))?;
            }
        }
        make_dir_like(&upper, &owner)?;
        make_dir_like(&work, &owner)?;
        running.swap(&upper, &work, &kept)
    })();
    if let Err(e) = swapped {
        let _ = fs::remove_dir(&upper);
        let _ = fs::remove_dir(&work);
        renames.undo();
        let _ = fs::remove_dir(&aside);
        return Err(running.undone_and_thawed("roll back", e));
    }
    remove_aside(&aside);
    Ok(())
}

/// What a change to the layers of a running sandbox gets: its layer stack as copies (upper and checkpoints, see
/// `layer::clone_layer`) over the workspace, and when it was created.
pub struct LayerCopy<'a> {
    pub stack: &'a crate::layer::LayerStack,
    pub created: f64,
}

/// `airlock commit` or `discard` of a running long-lived sandbox (`what`: "commit", "discard"). Overlayfs
/// forbids changing the layers under the mounted overlay, so, as a running rollback does: freeze; copy every
/// layer (hard links, no data); `change` works on the copies (and the host workspace) exactly as on a stopped
/// sandbox's layers, and says whether it changed anything; then the copies take the originals' places, a new
/// overlay over them is mounted in place of the old one, and the processes continue. Nothing changed (a refused
/// commit): no swap, just continue.
///
/// A failure before `change` undoes everything. If `change` itself fails half way (an I/O error in the middle of
/// a commit), what it applied is already out of the copies, so they are still put in place (the running sandbox
/// sees the same tree either way, and running the command again finishes, as for a stopped sandbox).
pub fn change<T, E>(
    state: &StateDir,
    name: &str,
    what: &str,
    change: impl FnOnce(LayerCopy<'_>) -> Result<(T, bool), E>,
) -> Result<T, StoreError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let running = running_layer(state, name, what)?;
    let layer = &running.layer;
    let checkpoints = checkpoints(&running.dir)?;
    let (upper, work) = (layer.upper(), layer.work());
    let owner = stat(&upper)?;
    let copies = running.aside(&format!("{what}-new"))?;
    let aside = match running.aside(what) {
        Ok(aside) => aside,
        Err(e) => {
            let _ = fs::remove_dir(&copies);
            return Err(e);
        }
    };
    // (original, copy) of every layer, upper first then the checkpoints newest first (the overlay's order).
    let mut pairs = vec![(upper.clone(), copies.join("upper"))];
    for c in checkpoints.iter().rev() {
        pairs.push((c.dir.clone(), copies.join(layout::checkpoint_name(c.index, &c.label))));
    }
    let copy_stack = crate::layer::LayerStack {
        upper: copies.join("upper"),
        frozen: pairs[1..].iter().map(|(_, copy)| copy.clone()).collect(),
        lower: PathBuf::from(&running.workspace),
        scratch: layer.compose_scratch(),
    };

    if let Err(e) = running.freeze(what) {
        let _ = fs::remove_dir(&copies);
        let _ = fs::remove_dir(&aside);
        return Err(e);
    }
    // Frozen: nothing in the sandbox writes, and its overlay is read-only. The copies are of that state.
    let copied = pairs.iter().try_for_each(|(original, copy)| {
        crate::layer::clone_layer(original, copy)
            .map_err(|source| StoreError::CopyLayer { path: original.clone(), source })
    });
    if let Err(e) = copied {
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        return Err(running.undone_and_thawed(what, e));
    }
    let (result, changed) = match change(LayerCopy { stack: &copy_stack, created: running.created }) {
        Ok((value, changed)) => (Ok(value), changed),
        Err(e) => (Err(StoreError::Change(e.into())), true),
    };
    if !changed {
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        running.live.thaw(&running.workspace_c).map_err(|source| StoreError::ThawAfterNoChange {
            name: name.to_string(),
            what: what.to_string(),
            source,
        })?;
        return result;
    }
    let mut renames = Renames::default();
    let swapped = (|| -> Result<(), StoreError> {
        renames.rename(&work, &aside.join("work"))?;
        for (original, copy) in &pairs {
            let base = original.file_name().unwrap_or_default();
            renames.rename(original, &aside.join(base))?;
            renames.rename(copy, original)?;
        }
        make_dir_like(&work, &owner)?;
        let frozen: Vec<PathBuf> = pairs[1..].iter().map(|(original, _)| original.clone()).collect();
        running.swap(&upper, &work, &frozen)
    })();
    if let Err(e) = swapped {
        if renames.moved(&work) {
            // The new work dir (a failed mount may have made its `work/work`), so the old one can come back.
            let _ = empty_work(&work);
            let _ = fs::remove_dir(&work);
        }
        renames.undo();
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        if what != "commit" {
            // A discard changed only the copies: nothing was changed.
            return Err(running.undone_and_thawed(what, e));
        }
        // The host workspace has what the commit applied (before the error, if it failed), the layer as before.
        return Err(running.thawed_or(StoreError::CommitNotInPlace { name: name.to_string(), source: Box::new(e) }));
    }
    remove_aside(&aside);
    remove_aside(&copies);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{SandboxState, WorkspaceRef};

    #[test]
    fn checkpoints_of_a_stopped_sandbox_freeze_and_roll_back() {
        let root = std::env::temp_dir().join(format!("airlock-store-ckpt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let state = StateDir::at(root.join("state"));
        let workspace = root.join("ws");
        fs::create_dir_all(&workspace).unwrap();
        let ws = workspace.to_str().unwrap();
        let claimed = SandboxState::create(&state, "s", Some(WorkspaceRef { path: ws, mode: "cow" }), true).unwrap();
        let layer = claimed.dir.layer().unwrap();
        drop(claimed);

        fs::write(layer.upper().join("a"), "1").unwrap();
        let first = take(&state, "s", Some("one")).unwrap();
        assert_eq!(first.label, "one");
        assert!(first.frozen.join("a").is_file() && !first.running);
        assert!(fs::read_dir(layer.upper()).unwrap().next().is_none(), "a fresh upper");
        fs::write(layer.upper().join("b"), "2").unwrap();
        let second = take(&state, "s", None).unwrap();
        assert_eq!(second.label, "c2");
        assert!(matches!(take(&state, "s", Some("one")), Err(StoreError::DuplicateLabel { .. })));
        assert!(matches!(take(&state, "s", Some("../x")), Err(StoreError::InvalidLabel { .. })));
        fs::write(layer.upper().join("c"), "3").unwrap();

        let dir = state.sandbox("s");
        assert_eq!(checkpoints(&dir).unwrap().iter().map(|c| c.label.as_str()).collect::<Vec<_>>(), ["one", "c2"]);
        assert!(!roll_back(&state, "s", "one").unwrap());
        assert_eq!(checkpoints(&dir).unwrap().len(), 1);
        assert!(!layer.checkpoint(2, "c2").exists() && !layer.checkpoint_created(2, "c2").exists());
        assert!(!layer.upper().join("c").exists());
        assert!(matches!(roll_back(&state, "s", "c2"), Err(StoreError::NoSuchCheckpoint { .. })));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn mounts_inside_the_workspace_are_found() {
        let mut fsys = policy::profile::FilesystemSection::default();
        fsys.tmpfs.push("/elsewhere".to_string());
        assert_eq!(mount_inside(&fsys, "/w/"), None);
        fsys.bind.push("/host/data:/w/data".to_string());
        assert_eq!(mount_inside(&fsys, "/w"), Some("/w/data".to_string()));
        let mut fsys = policy::profile::FilesystemSection::default();
        fsys.tmpfs.push("/w/tmp:16M".to_string());
        assert_eq!(mount_inside(&fsys, "/w"), Some("/w/tmp".to_string()));
    }
}
