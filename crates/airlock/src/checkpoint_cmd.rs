//! `airlock checkpoint NAME [LABEL]`, `airlock checkpoints NAME [--json]`, `airlock rollback NAME LABEL`.
//!
//! A checkpoint freezes the sandbox's upper directory as a read-only layer: `upper/` is renamed to
//! `layers/N-LABEL/` and a fresh empty `upper/` (and an emptied `work/`) take its place. The next run stacks the
//! frozen layers under the new upper (`lowerdir=layers/N:...:layers/1:WORKSPACE`), so a checkpoint costs one
//! rename whatever the workspace's size. A rollback to LABEL deletes the layers newer than it and empties
//! `upper/`: the workspace shows exactly what it showed right after `airlock checkpoint NAME LABEL`.
//!
//! Both change the layers, which overlayfs forbids while they are mounted. For a running long-lived sandbox
//! (`airlock create`) they replace its workspace overlay in place (see `runtime::layer::live`): its processes are
//! stopped, the old overlay made read-only, the directories renamed on the host, a new overlay mounted in its
//! place, and the processes continued ([`checkpoint_running`], [`rollback_running`]; `airlock commit` and
//! `discard` of a running sandbox go through [`change_running`], which changes copies of the layers). A running
//! `airlock run` sandbox is refused: its init is not recorded.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use runtime::layer::live::{LiveSandbox, NewStack};

use crate::state;

/// How many checkpoints one sandbox stacks (the overlay's lower layers, opened into a fixed-size array).
const MAX_CHECKPOINTS: usize = runtime::plan::MAX_FROZEN_LAYERS;

/// Claims the sandbox's layer for a checkpoint or rollback of a sandbox that has ended.
fn claim(name: &str) -> Result<state::ClaimedLayer> {
    state::claim_layer(name)
}

/// Whether the sandbox `name` runs now (then its overlay is mounted).
pub(crate) fn running(name: &str) -> Result<bool> {
    policy::names::validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let dir = state::sandbox_dir(name);
    Ok(dir.is_dir() && state::is_running(&dir))
}

pub fn checkpoint(name: &str, label: Option<&str>) -> Result<i32> {
    if running(name)? {
        return checkpoint_running(name, label);
    }
    let claim = claim(name)?;
    let dir = &claim.dir;
    let (index, label) = next_checkpoint(dir, name, label)?;
    let root = state::layer_root(dir)?;
    let layers = root.join("layers");
    match fs::DirBuilder::new().create(&layers) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", layers.display())),
    }
    let upper = root.join("upper");
    // The new upper belongs to whoever owned the old one: the sandbox root's host id (as host root).
    let owner = fs::symlink_metadata(&upper).with_context(|| format!("cannot read {}", upper.display()))?;
    let frozen = layers.join(format!("{index}-{label}"));
    let created = layers.join(format!("{index}-{label}.created"));
    fs::write(&created, format!("{}\n", state::now()))
        .with_context(|| format!("cannot write {}", created.display()))?;
    // The checkpoint itself: one rename. Then the new empty upper; a stale work dir would confuse the overlay.
    fs::rename(&upper, &frozen)
        .with_context(|| format!("cannot rename {} to {}", upper.display(), frozen.display()))?;
    make_dir_like(&upper, &owner)?;
    empty_work(&root)?;
    // The audit log's summary of what this checkpoint froze (bounded: a checkpoint stays a rename).
    crate::audit_cmd::record_checkpoint(name, &label, &frozen, &claim.layer.lower);
    println!("checkpoint {label} of sandbox {name}");
    Ok(0)
}

/// The next checkpoint's index and label (LABEL, or `cN`), checked: valid, unique, room in the stack.
fn next_checkpoint(dir: &std::path::Path, name: &str, label: Option<&str>) -> Result<(u32, String)> {
    let existing = state::checkpoints(dir)?;
    if existing.len() >= MAX_CHECKPOINTS {
        bail!(
            "sandbox {name} has {} checkpoints, the most one sandbox stacks; roll back to an earlier one first",
            existing.len()
        );
    }
    let index = existing.last().map_or(1, |c| c.index + 1);
    let label = match label {
        Some(label) => label.to_string(),
        None => format!("c{index}"),
    };
    policy::names::validate_sandbox_name(&label)
        .map_err(|e| anyhow!("invalid checkpoint label {label:?}: {}", crate::one_line(&anyhow!(e))))?;
    if existing.iter().any(|c| c.label == label) {
        bail!("sandbox {name} has a checkpoint {label} already (see `airlock checkpoints {name}`)");
    }
    Ok((index, label))
}

/// A new empty directory `path` with the mode and owner of `like` (the old upper: the sandbox root's host id).
fn make_dir_like(path: &std::path::Path, like: &fs::Metadata) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(like.mode() & 0o7777))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))
        .with_context(|| format!("cannot set the owner of {}", path.display()))
}

/// Empties the overlay's `work/` (its `work/work` has mode 000, which its owner opens up first).
fn empty_work(dir: &std::path::Path) -> Result<()> {
    empty_work_in(&dir.join("work"))
}

fn empty_work_in(work: &Path) -> Result<()> {
    let work = work.to_path_buf();
    let inner = work.join("work");
    if fs::symlink_metadata(&inner).is_ok_and(|m| m.is_dir()) {
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot open up {}", inner.display()))?;
    }
    if work.is_dir() {
        runtime::layer::clear_dir(&work).with_context(|| format!("cannot empty {}", work.display()))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct CheckpointDoc {
    label: String,
    /// Unix time (seconds) it was taken.
    created: Option<f64>,
    /// Entries the frozen layer holds: files, symlinks, whiteouts (deletions), empty directories.
    changes: u64,
}

pub fn list(name: &str, json: bool) -> Result<i32> {
    // Only for a sandbox with a copy-on-write workspace (a clear error otherwise).
    state::layer_of(name, false)?;
    let dir = state::sandbox_dir(name);
    let mut docs = Vec::new();
    for c in state::checkpoints(&dir)? {
        let changes = runtime::layer::count_entries(&c.dir)
            .with_context(|| format!("cannot read checkpoint {} of sandbox {name}", c.label))?;
        docs.push(CheckpointDoc { label: c.label, created: c.created, changes });
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        let doc = serde_json::json!({ "name": name, "checkpoints": docs });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else if docs.is_empty() {
        writeln!(out, "no checkpoints (airlock checkpoint {name} [LABEL] takes one)")?;
    } else {
        writeln!(out, "{:<24} {:<20} CHANGES", "LABEL", "CREATED")?;
        for d in &docs {
            let created = d.created.map_or_else(|| "-".to_string(), utc_time);
            writeln!(out, "{:<24} {:<20} {}", d.label, created, d.changes)?;
        }
    }
    out.flush()?;
    Ok(0)
}

pub fn rollback(name: &str, label: &str) -> Result<i32> {
    if running(name)? {
        return rollback_running(name, label);
    }
    let claim = claim(name)?;
    let dir = &claim.dir;
    let root = state::layer_root(dir)?;
    let all = state::checkpoints(dir)?;
    let Some(target) = all.iter().find(|c| c.label == label) else {
        bail!("sandbox {name} has no checkpoint {label} (see `airlock checkpoints {name}`)");
    };
    // Newest first: a rollback killed half way leaves a prefix of the stack, and running it again finishes.
    for newer in all.iter().rev().filter(|c| c.index > target.index) {
        runtime::layer::remove_path(&newer.dir)
            .with_context(|| format!("cannot remove checkpoint {} ({})", newer.label, newer.dir.display()))?;
        let created = root.join("layers").join(format!("{}-{}.created", newer.index, newer.label));
        let _ = fs::remove_file(created);
    }
    let upper = root.join("upper");
    runtime::layer::clear_dir(&upper).with_context(|| format!("cannot empty {}", upper.display()))?;
    empty_work(&root)?;
    println!("sandbox {name} rolled back to checkpoint {label}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------------------------
// A running long-lived sandbox: the overlay is replaced in place (runtime::layer::live).

/// What a running checkpoint or rollback needs: the sandbox's init, its workspace, its layer's directory, and
/// the lock that keeps two of them (or a commit's claim... which refuses while it runs anyway) apart.
struct RunningLayer {
    live: LiveSandbox,
    workspace: String,
    workspace_c: CString,
    root: PathBuf,
    dir: PathBuf,
    /// When the sandbox was created (a commit's conflicts are host files changed after it).
    created: f64,
    _lock: fs::File,
}

fn running_layer(name: &str, what: &str) -> Result<RunningLayer> {
    let dir = state::sandbox_dir(name);
    let record = state::read_record(&dir)?;
    let (Some(init_pid), Some(init_start_time)) = (record.init_pid, record.init_start_time) else {
        bail!(
            "sandbox {name} is running under `airlock run`: {what} of such a run is not supported yet (only of a \
             long-lived sandbox, `airlock create`); {what} once it has ended"
        );
    };
    let workspace = match (record.workspace, record.workspace_mode.as_deref()) {
        (Some(workspace), Some("cow")) => workspace,
        _ => bail!("sandbox {name} has no copy-on-write workspace (it was run without --workspace in cow mode)"),
    };
    // A mount inside the workspace (--bind, --tmpfs) sits on the old overlay and would go with it.
    let profile = state::read_profile(&dir)?;
    let fsys = &profile.filesystem;
    let inside = format!("{}/", workspace.trim_end_matches('/'));
    let nested = fsys.bind.iter().chain(&fsys.ro_bind).chain(&fsys.tmpfs).find_map(|spec| {
        let dest = spec.split_once(':').map_or(spec.as_str(), |(src, rest)| {
            // --bind SRC[:DST], --tmpfs DST[:SIZE]: the destination is the part that is a path.
            if rest.starts_with('/') {
                rest
            } else {
                src
            }
        });
        dest.starts_with(&inside).then(|| dest.to_string())
    });
    if let Some(dest) = nested {
        bail!(
            "sandbox {name} has a mount inside its workspace ({dest}), which a {what} of the running sandbox would \
             drop; {what} once it has ended (airlock stop {name})"
        );
    }
    let lock_path = dir.join("layer.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if !runtime::host::try_lock_exclusive(&lock) {
        bail!("another checkpoint, rollback, commit or discard of sandbox {name} is in progress");
    }
    let root = state::layer_root(&dir)?;
    let live = LiveSandbox::open(name, init_pid, init_start_time)?;
    let workspace_c = CString::new(workspace.clone()).map_err(|_| anyhow!("workspace path holds a NUL byte"))?;
    Ok(RunningLayer { live, workspace, workspace_c, root, dir, created: record.created, _lock: lock })
}

/// The new stack's directories, as the helper opens them.
fn open_stack(upper: &Path, work: &Path, frozen: &[PathBuf], lower: &str) -> Result<NewStack> {
    let c = |path: &Path| {
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| anyhow!("NUL in {}", path.display()))
    };
    Ok(NewStack {
        upper: c(upper)?,
        work: c(work)?,
        frozen: frozen.iter().map(|p| c(p)).collect::<Result<_>>()?,
        lower: c(Path::new(lower))?,
    })
}

/// A scratch directory beside the layers for what a running checkpoint or rollback takes out of the way.
fn aside_dir(root: &Path, what: &str) -> Result<PathBuf> {
    let aside = root.join(format!("{what}.{}", std::process::id()));
    fs::DirBuilder::new().mode(0o700).create(&aside).with_context(|| format!("cannot create {}", aside.display()))?;
    Ok(aside)
}

/// Removes what was put aside (the old work dir's `work/work` has mode 000: opened up first).
fn remove_aside(aside: &Path) {
    let _ = empty_work_in(&aside.join("work"));
    let _ = runtime::layer::remove_path(aside);
}

/// `airlock checkpoint` of a running sandbox: freeze, rename upper to the checkpoint and work aside, fresh upper
/// and work, the new overlay in place, continue. Any failure puts every directory back and continues.
fn checkpoint_running(name: &str, label: Option<&str>) -> Result<i32> {
    let layer = running_layer(name, "checkpoint")?;
    let (index, label) = next_checkpoint(&layer.dir, name, label)?;
    let root = &layer.root;
    let layers = root.join("layers");
    match fs::DirBuilder::new().create(&layers) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", layers.display())),
    }
    let (upper, work) = (root.join("upper"), root.join("work"));
    let owner = fs::symlink_metadata(&upper).with_context(|| format!("cannot read {}", upper.display()))?;
    let frozen = layers.join(format!("{index}-{label}"));
    let created = layers.join(format!("{index}-{label}.created"));
    let aside = aside_dir(root, "checkpoint")?;

    layer.live.freeze(&layer.workspace_c).with_context(|| format!("cannot checkpoint running sandbox {name}"))?;
    // Frozen: nothing in the sandbox writes, and its overlay is read-only.
    let swapped = (|| -> Result<()> {
        fs::write(&created, format!("{}\n", state::now()))
            .with_context(|| format!("cannot write {}", created.display()))?;
        fs::rename(&upper, &frozen)
            .with_context(|| format!("cannot rename {} to {}", upper.display(), frozen.display()))?;
        fs::rename(&work, aside.join("work")).with_context(|| format!("cannot move {} aside", work.display()))?;
        make_dir_like(&upper, &owner)?;
        make_dir_like(&work, &owner)?;
        let stack_dirs: Vec<PathBuf> = state::checkpoints(&layer.dir)?.into_iter().rev().map(|c| c.dir).collect();
        let stack = open_stack(&upper, &work, &stack_dirs, &layer.workspace)?;
        layer.live.swap(&layer.workspace_c, &stack)?;
        Ok(())
    })();
    if let Err(e) = swapped {
        // Back as it was: the old upper and work (the old overlay still uses them), then continue.
        if frozen.exists() {
            let _ = fs::remove_dir(&upper);
            let _ = fs::rename(&frozen, &upper);
        }
        if aside.join("work").exists() {
            let _ = fs::remove_dir(&work);
            let _ = fs::rename(aside.join("work"), &work);
        }
        let _ = fs::remove_file(&created);
        let _ = fs::remove_dir(&aside);
        return Err(undone_and_thawed(&layer, name, "checkpoint", e));
    }
    remove_aside(&aside);
    crate::audit_cmd::record_checkpoint(name, &label, &frozen, Path::new(&layer.workspace));
    println!("checkpoint {label} of sandbox {name} (running: new commands see the workspace as it is)");
    Ok(0)
}

/// The error of a running checkpoint or rollback whose changes were undone: the sandbox's processes are
/// continued, and if that fails too the error says how to recover.
fn undone_and_thawed(layer: &RunningLayer, name: &str, action: &str, e: anyhow::Error) -> anyhow::Error {
    let thawed = layer.live.thaw(&layer.workspace_c);
    let e = e.context(format!("cannot {action} running sandbox {name} (nothing was changed)"));
    match thawed {
        Ok(()) => e,
        Err(t) => e.context(format!("and its processes may still be stopped ({t}): airlock stop {name}")),
    }
}

/// `airlock rollback` of a running sandbox: freeze, move upper, work and the newer checkpoints aside, fresh
/// upper and work, the new overlay (over the layers up to LABEL) in place, continue; then what was put aside is
/// deleted. Any failure before the swap puts everything back.
fn rollback_running(name: &str, label: &str) -> Result<i32> {
    let layer = running_layer(name, "rollback")?;
    let root = &layer.root;
    let all = state::checkpoints(&layer.dir)?;
    let Some(target) = all.iter().find(|c| c.label == label) else {
        bail!("sandbox {name} has no checkpoint {label} (see `airlock checkpoints {name}`)");
    };
    let newer: Vec<&state::Checkpoint> = all.iter().filter(|c| c.index > target.index).collect();
    let kept: Vec<PathBuf> = all.iter().rev().filter(|c| c.index <= target.index).map(|c| c.dir.clone()).collect();
    let (upper, work) = (root.join("upper"), root.join("work"));
    let owner = fs::symlink_metadata(&upper).with_context(|| format!("cannot read {}", upper.display()))?;
    let aside = aside_dir(root, "rollback")?;
    // (from, to) of every rename, to undo them in reverse.
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();

    layer.live.freeze(&layer.workspace_c).with_context(|| format!("cannot roll back running sandbox {name}"))?;
    let swapped = (|| -> Result<()> {
        let layers = root.join("layers");
        let mut renames = vec![(upper.clone(), aside.join("upper")), (work.clone(), aside.join("work"))];
        for c in &newer {
            let base = format!("{}-{}", c.index, c.label);
            renames.push((c.dir.clone(), aside.join(&base)));
            let created = layers.join(format!("{base}.created"));
            if created.exists() {
                renames.push((created, aside.join(format!("{base}.created"))));
            }
        }
        for (from, to) in renames {
            fs::rename(&from, &to).with_context(|| format!("cannot move {} aside", from.display()))?;
            moved.push((from, to));
        }
        make_dir_like(&upper, &owner)?;
        make_dir_like(&work, &owner)?;
        let stack = open_stack(&upper, &work, &kept, &layer.workspace)?;
        layer.live.swap(&layer.workspace_c, &stack)?;
        Ok(())
    })();
    if let Err(e) = swapped {
        let _ = fs::remove_dir(&upper);
        let _ = fs::remove_dir(&work);
        for (from, to) in moved.iter().rev() {
            let _ = fs::rename(to, from);
        }
        let _ = fs::remove_dir(&aside);
        return Err(undone_and_thawed(&layer, name, "roll back", e));
    }
    remove_aside(&aside);
    println!("sandbox {name} rolled back to checkpoint {label} (running: new commands see the workspace as it was)");
    Ok(0)
}

/// What a change to the layers of a running sandbox gets: its layer stack as copies (upper and checkpoints, see
/// `runtime::layer::clone_layer`) over the workspace, and when it was created.
pub(crate) struct LayerCopy<'a> {
    pub stack: &'a runtime::layer::LayerStack,
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
pub(crate) fn change_running<T>(
    name: &str,
    what: &str,
    change: impl FnOnce(LayerCopy<'_>) -> Result<(T, bool)>,
) -> Result<T> {
    let layer = running_layer(name, what)?;
    let root = &layer.root;
    let checkpoints = state::checkpoints(&layer.dir)?;
    let (upper, work) = (root.join("upper"), root.join("work"));
    let owner = fs::symlink_metadata(&upper).with_context(|| format!("cannot read {}", upper.display()))?;
    let copies = aside_dir(root, &format!("{what}-new"))?;
    let aside = match aside_dir(root, what) {
        Ok(aside) => aside,
        Err(e) => {
            let _ = fs::remove_dir(&copies);
            return Err(e);
        }
    };
    // (original, copy) of every layer, upper first then the checkpoints newest first (the overlay's order).
    let mut pairs = vec![(upper.clone(), copies.join("upper"))];
    for c in checkpoints.iter().rev() {
        pairs.push((c.dir.clone(), copies.join(format!("{}-{}", c.index, c.label))));
    }
    let copy_stack = runtime::layer::LayerStack {
        upper: copies.join("upper"),
        frozen: pairs[1..].iter().map(|(_, copy)| copy.clone()).collect(),
        lower: PathBuf::from(&layer.workspace),
        scratch: root.join(format!("compose.{}", std::process::id())),
    };

    layer.live.freeze(&layer.workspace_c).with_context(|| format!("cannot {what} running sandbox {name}"))?;
    // Frozen: nothing in the sandbox writes, and its overlay is read-only. The copies are of that state.
    let copied = pairs.iter().try_for_each(|(original, copy)| {
        runtime::layer::clone_layer(original, copy)
            .with_context(|| format!("cannot copy {} for the change", original.display()))
    });
    if let Err(e) = copied {
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        return Err(undone_and_thawed(&layer, name, what, e));
    }
    let (result, changed) = match change(LayerCopy { stack: &copy_stack, created: layer.created }) {
        Ok((value, changed)) => (Ok(value), changed),
        Err(e) => (Err(e), true),
    };
    if !changed {
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        layer.live.thaw(&layer.workspace_c).with_context(|| {
            format!("the sandbox's processes may still be stopped: airlock stop {name}, or run airlock {what} again")
        })?;
        return result;
    }
    // (from, to) of every rename, to undo them in reverse.
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    let swapped = (|| -> Result<()> {
        let mut renames = vec![(work.clone(), aside.join("work"))];
        for (original, copy) in &pairs {
            let name = original.file_name().unwrap_or_default();
            renames.push((original.clone(), aside.join(name)));
            renames.push((copy.clone(), original.clone()));
        }
        for (from, to) in renames {
            fs::rename(&from, &to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
            moved.push((from, to));
        }
        make_dir_like(&work, &owner)?;
        let frozen: Vec<PathBuf> = pairs[1..].iter().map(|(original, _)| original.clone()).collect();
        let stack = open_stack(&upper, &work, &frozen, &layer.workspace)?;
        layer.live.swap(&layer.workspace_c, &stack)?;
        Ok(())
    })();
    if let Err(e) = swapped {
        if moved.iter().any(|(from, _)| from == &work) {
            // The new work dir (a failed mount may have made its `work/work`), so the old one can come back.
            let _ = empty_work_in(&work);
            let _ = fs::remove_dir(&work);
        }
        for (from, to) in moved.iter().rev() {
            let _ = fs::rename(to, from);
        }
        remove_aside(&copies);
        let _ = fs::remove_dir(&aside);
        if what != "commit" {
            // A discard changed only the copies: nothing was changed.
            return Err(undone_and_thawed(&layer, name, what, e));
        }
        // The host workspace has what the commit applied (before the error, if it failed), the layer as before.
        let thawed = layer.live.thaw(&layer.workspace_c);
        let e = e.context(format!(
            "cannot put the new layer in place in running sandbox {name}: what was committed to the host stays in \
             its layer too (airlock commit --force {name} once it has stopped finishes)"
        ));
        return Err(match thawed {
            Ok(()) => e,
            Err(t) => e.context(format!("and its processes may still be stopped ({t}): airlock stop {name}")),
        });
    }
    remove_aside(&aside);
    remove_aside(&copies);
    result
}

/// `2026-11-29 21:40:07` (UTC) for a unix time.
fn utc_time(unix: f64) -> String {
    let since = Duration::try_from_secs_f64(unix.max(0.0)).unwrap_or(Duration::MAX);
    // Past what SystemTime holds: far enough that the formatter prints its last date.
    let time = UNIX_EPOCH.checked_add(since).unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(u64::MAX / 4));
    audit::time::format_utc_seconds(time)
}

#[cfg(test)]
mod tests {
    use super::utc_time;

    #[test]
    fn unix_times_read_as_utc() {
        assert_eq!(utc_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(1_798_580_407.5), "2026-12-29 21:40:07");
        assert_eq!(utc_time(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(utc_time(f64::MAX), "9999-12-31 23:59:59");
    }
}
