//! The state a sandbox keeps on the host, under its name: `$STATE/sandboxes/NAME/` holds `sandbox.json` (what it
//! is), `lock` (held while it runs), the copy-on-write layer (`upper/`, `work/`), its checkpoints (`layers/N-LABEL/`
//! frozen layers, with `layers/N-LABEL.created`) and `stats.json` (final resource numbers). It stays until `airlock rm NAME`; `--rm` removes it when the run ends.
//!
//! With `--disk SIZE` (as host root) the layer's directories live on an ext4 image instead: `layer.img`, mounted
//! at `layer/` (which then holds `upper/`, `work/`, `layers/`); [`layer_root`] says where they are, and mounts the
//! image again when something (a reboot) unmounted it. See `runtime::layer::disk`.
//!
//! `$STATE` is `$AIRLOCK_STATE_DIR`, else `/var/lib/airlock` for root and `$XDG_STATE_HOME/airlock`
//! (`~/.local/state/airlock`) for other users.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where airlock keeps state.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIRLOCK_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if runtime::host::is_host_root() {
        return PathBuf::from("/var/lib/airlock");
    }
    match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg).join("airlock"),
        (None, Some(home)) => PathBuf::from(home).join(".local/state/airlock"),
        (None, None) => PathBuf::from("/tmp/airlock-state"),
    }
}

/// The directory of the sandbox called `name` (validated by the caller).
pub fn sandbox_dir(name: &str) -> PathBuf {
    state_dir().join("sandboxes").join(name)
}

/// `sandbox.json`: stable field names (documented in README).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub name: String,
    /// The host workspace, if any.
    pub workspace: Option<String>,
    /// `cow`, `rw`, `ro`, or null without a workspace.
    pub workspace_mode: Option<String>,
    /// Unix time (seconds, fractional) the sandbox was created; host files changed after it conflict on commit.
    pub created: f64,
    /// `running` or `exited` (what `airlock ls` shows is checked against the lock).
    pub status: String,
    pub exit_code: Option<i32>,
    /// A long-lived sandbox (`airlock create`): its init's host pid and start time (field 22 of
    /// `/proc/PID/stat`, against pid reuse), recorded once it is set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_start_time: Option<u64>,
    /// A long-lived sandbox's supervisor (what `airlock stop` signals), with its start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start_time: Option<u64>,
}

/// A sandbox's state directory, claimed by this process for the run.
pub struct SandboxState {
    pub name: String,
    pub dir: PathBuf,
    pub record: SandboxRecord,
    /// Held (flock) while the sandbox runs; dropped with this value.
    _lock: File,
    /// Claimed by `--resume` (its layer exists already).
    resumed: bool,
}

/// The image of a disk-bounded layer, in the sandbox's directory.
pub const LAYER_IMAGE: &str = "layer.img";
/// Where that image is mounted, in the sandbox's directory.
pub const LAYER_MOUNT: &str = "layer";

/// The directory holding a sandbox's `upper/`, `work/` and `layers/`: its own directory, or for a disk-bounded
/// layer the mounted image, mounted first if it is not (after a reboot; as host root only). Every command that
/// reads or changes the layer goes through this.
pub fn layer_root(dir: &Path) -> Result<PathBuf> {
    let image = dir.join(LAYER_IMAGE);
    if fs::symlink_metadata(&image).is_err() {
        return Ok(dir.to_path_buf());
    }
    let mountpoint = dir.join(LAYER_MOUNT);
    runtime::layer::disk::ensure_mounted(&image, &mountpoint)
        .with_context(|| format!("the workspace layer of {} is a disk-bounded image", dir.display()))?;
    Ok(mountpoint)
}

/// `16M` for 16 MiB: how a size is shown back to the user.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

impl SandboxState {
    /// Creates the state of a new sandbox `name`. A sandbox of that name must not exist yet.
    pub fn create(name: &str, workspace: Option<(&str, &str)>, with_layer: bool) -> Result<SandboxState> {
        let parent = state_dir().join("sandboxes");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .with_context(|| format!("cannot create the state directory {}", parent.display()))?;
        let dir = parent.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("a sandbox named {name} exists already (see `airlock ls`; `airlock rm {name}` removes it)")
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
        let lock = lock_file(&dir)?.ok_or_else(|| anyhow!("sandbox {name} is being created by another airlock"))?;
        if with_layer {
            // The overlay needs upper and work on one filesystem; airlock hands them to the sandbox's root.
            for sub in ["upper", "work"] {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(dir.join(sub))
                    .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
            }
        }
        let record = SandboxRecord {
            name: name.to_string(),
            workspace: workspace.map(|(path, _)| path.to_string()),
            workspace_mode: workspace.map(|(_, mode)| mode.to_string()),
            created: now(),
            status: "running".to_string(),
            exit_code: None,
            init_pid: None,
            init_start_time: None,
            supervisor_pid: None,
            supervisor_start_time: None,
        };
        let state = SandboxState { name: name.to_string(), dir, record, _lock: lock, resumed: false };
        state.write_record()?;
        Ok(state)
    }

    /// Claims the kept sandbox `name` to run again in its layers (`airlock run --name NAME --resume`): it must
    /// have ended, and have been run with the same `cow` workspace.
    pub fn resume(name: &str, workspace: Option<(&str, &str)>) -> Result<SandboxState> {
        let dir = sandbox_dir(name);
        if !dir.is_dir() {
            bail!("--resume: no sandbox named {name} (see `airlock ls`; without --resume, --name {name} creates it)");
        }
        let lock = lock_file(&dir)?.ok_or_else(|| anyhow!("--resume: sandbox {name} is running"))?;
        let mut record = read_record(&dir)?;
        let (path, mode) = workspace.ok_or_else(|| anyhow!("--resume: give the sandbox's --workspace"))?;
        if mode != "cow" || record.workspace_mode.as_deref() != Some("cow") || record.workspace.as_deref() != Some(path)
        {
            bail!(
                "--resume: sandbox {name} was run with workspace {} ({} mode); resume it with that copy-on-write workspace",
                record.workspace.as_deref().unwrap_or("none"),
                record.workspace_mode.as_deref().unwrap_or("no")
            );
        }
        ensure_layer_dirs(&layer_root(&dir).context("--resume")?)?;
        record.status = "running".to_string();
        let state = SandboxState { name: name.to_string(), dir, record, _lock: lock, resumed: true };
        state.write_record()?;
        Ok(state)
    }

    /// The layer's directories for the run. `disk` (`--disk`): a new sandbox's layer is made on an image of
    /// that size; a resumed one must have been made so, with that size (a bound cannot be added or changed later).
    pub fn layer_dirs(&self, disk: Option<u64>) -> Result<runtime::prepare::LayerDirs> {
        let image = self.dir.join(LAYER_IMAGE);
        let bounded = fs::symlink_metadata(&image).is_ok();
        match (disk, bounded) {
            (Some(size), false) if !self.resumed => self.make_disk_layer(size)?,
            (Some(size), false) => bail!(
                "--disk {}: sandbox {} was created without --disk, and its layer cannot be bounded afterwards; \
                 resume it without --disk",
                human_size(size),
                self.name
            ),
            (Some(size), true) => {
                let had = runtime::layer::disk::image_size(&image)?;
                if had != size {
                    bail!(
                        "--disk {}: the layer of sandbox {} was created with --disk {}; resume with that size or \
                         without --disk",
                        human_size(size),
                        self.name,
                        human_size(had)
                    );
                }
            }
            (None, _) => {}
        }
        let root = layer_root(&self.dir)?;
        let frozen = checkpoints(&self.dir)?.into_iter().rev().map(|c| c.dir).collect();
        Ok(runtime::prepare::LayerDirs { upper: root.join("upper"), work: root.join("work"), frozen })
    }

    /// A new sandbox's layer on an ext4 image of `size` bytes, mounted, holding empty `upper/` and `work/`.
    fn make_disk_layer(&self, size: u64) -> Result<()> {
        // The plain layer directories `create` made give way to the image's (they are empty).
        for sub in ["upper", "work"] {
            let _ = fs::remove_dir(self.dir.join(sub));
        }
        let image = self.dir.join(LAYER_IMAGE);
        runtime::layer::disk::create_image(&image, size)?;
        let mountpoint = self.dir.join(LAYER_MOUNT);
        runtime::layer::disk::ensure_mounted(&image, &mountpoint)?;
        ensure_layer_dirs(&mountpoint)
    }

    /// A resumed run that did not start: the sandbox is as it was.
    pub fn abandon(&mut self) -> Result<()> {
        self.record.status = "exited".to_string();
        self.write_record()
    }

    /// Records how the run ended.
    pub fn finish(&mut self, exit_code: Option<i32>) -> Result<()> {
        self.record.status = "exited".to_string();
        self.record.exit_code = exit_code;
        self.write_record()
    }

    /// Removes everything the sandbox kept.
    pub fn remove(self) -> Result<()> {
        remove_sandbox_dir(&self.dir)
    }

    /// Keeps the merged profile a long-lived sandbox was created with: `airlock exec` builds its commands' plans
    /// from it.
    pub fn write_profile(&self, profile: &policy::profile::Profile) -> Result<()> {
        let path = self.dir.join(PROFILE_FILE);
        let text = serde_json::to_string_pretty(profile)? + "\n";
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn write_record(&self) -> Result<()> {
        let path = self.dir.join("sandbox.json");
        let staged = self.dir.join(".sandbox.json.tmp");
        let text = serde_json::to_string_pretty(&self.record)? + "\n";
        fs::write(&staged, text).with_context(|| format!("cannot write {}", staged.display()))?;
        fs::rename(&staged, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Takes the sandbox's lock without waiting; `None` when a running airlock holds it.
fn lock_file(dir: &Path) -> Result<Option<File>> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(runtime::host::try_lock_exclusive(&file).then_some(file))
}

/// Whether an airlock process runs the sandbox in `dir` now (it holds the lock).
pub fn is_running(dir: &Path) -> bool {
    matches!(lock_file(dir), Ok(None))
}

/// A kept sandbox's record.
pub fn read_record(dir: &Path) -> Result<SandboxRecord> {
    let path = dir.join("sandbox.json");
    let mut text = String::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid sandbox record", path.display()))
}

/// The merged profile of a sandbox started by `airlock create`.
pub const PROFILE_FILE: &str = "profile.json";

/// Reads `profile.json` (see [`SandboxState::write_profile`]).
pub fn read_profile(dir: &Path) -> Result<policy::profile::Profile> {
    let path = dir.join(PROFILE_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid profile", path.display()))
}

/// Every kept sandbox's name, sorted.
pub fn sandbox_names() -> Result<Vec<String>> {
    let parent = state_dir().join("sandboxes");
    let entries = match fs::read_dir(&parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", parent.display())),
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
pub fn remove_sandbox_dir(dir: &Path) -> Result<()> {
    // Never recurse into a mounted layer: if it cannot be unmounted, nothing is removed.
    runtime::layer::disk::unmount(&dir.join(LAYER_MOUNT))?;
    let inner_work = dir.join("work").join("work");
    if fs::symlink_metadata(&inner_work).is_ok_and(|m| m.is_dir()) {
        let _ = fs::set_permissions(&inner_work, fs::Permissions::from_mode(0o700));
    }
    // remove_dir_all never follows symlinks, so nothing the sandbox planted in its layer leads outside.
    fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}

/// A new sandbox name: `sbx-` and eight hex digits from the kernel's random source.
pub fn generated_name() -> String {
    let mut bytes = [0u8; 4];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let value = match random {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(_) => std::process::id() ^ (now() as u32),
    };
    format!("sbx-{value:08x}")
}

pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A kept sandbox's layer, claimed for a change that must not race another: its lock is held (so the sandbox is
/// not running and no other `airlock commit` or `run` uses it) until the returned value is dropped.
pub struct ClaimedLayer {
    pub layer: runtime::layer::LayerStack,
    pub dir: PathBuf,
    pub record: SandboxRecord,
    _lock: File,
}

/// `upper/` and `work/` exist (a checkpoint killed between its rename and the new `upper/` left none).
fn ensure_layer_dirs(dir: &Path) -> Result<()> {
    for sub in ["upper", "work"] {
        match fs::DirBuilder::new().mode(0o755).create(dir.join(sub)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.join(sub).display())),
        }
    }
    Ok(())
}

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
pub fn checkpoints(dir: &Path) -> Result<Vec<Checkpoint>> {
    let layers = layer_root(dir)?.join("layers");
    let entries = match fs::read_dir(&layers) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", layers.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", layers.display()))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some((index, label)) = name.split_once('-') else { continue };
        let (Ok(index), true) = (index.parse::<u32>(), entry.file_type().is_ok_and(|t| t.is_dir())) else { continue };
        let created =
            fs::read_to_string(layers.join(format!("{name}.created"))).ok().and_then(|t| t.trim().parse().ok());
        found.push(Checkpoint { index, label: label.to_string(), dir: entry.path(), created });
    }
    found.sort_by_key(|c| c.index);
    Ok(found)
}

/// The layer stack of a sandbox's state directory over `workspace`.
pub fn layer_stack(dir: &Path, workspace: &str) -> Result<runtime::layer::LayerStack> {
    let root = layer_root(dir)?;
    Ok(runtime::layer::LayerStack {
        upper: root.join("upper"),
        frozen: checkpoints(dir)?.into_iter().rev().map(|c| c.dir).collect(),
        lower: PathBuf::from(workspace),
        // Per process: two diffs at once must not share it. Beside the layers: it holds hard links to them.
        scratch: root.join(format!("compose.{}", std::process::id())),
    })
}

/// The layer of the kept sandbox `name` for `airlock commit`: as [`layer_of`] for a change, holding the lock.
pub fn claim_layer(name: &str) -> Result<ClaimedLayer> {
    let layer = layer_of(name, true)?;
    let dir = sandbox_dir(name);
    let lock = lock_file(&dir)?.ok_or_else(|| {
        anyhow!("sandbox {name} is running or another airlock is changing its layer; its layer can change only once it has ended")
    })?;
    let record = read_record(&dir)?;
    Ok(ClaimedLayer { layer, dir, record, _lock: lock })
}

/// The copy-on-write layer of the kept sandbox `name`, for `diff` and `discard`. `for_change`: the layer is
/// about to be modified, which overlayfs forbids while the sandbox runs (its overlay is mounted).
pub fn layer_of(name: &str, for_change: bool) -> Result<runtime::layer::LayerStack> {
    policy::names::validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let dir = sandbox_dir(name);
    if !dir.is_dir() {
        bail!("no sandbox named {name} (see `airlock ls`)");
    }
    let record = read_record(&dir)?;
    let workspace = match (record.workspace, record.workspace_mode.as_deref()) {
        (Some(workspace), Some("cow")) => workspace,
        _ => bail!("sandbox {name} has no copy-on-write workspace (it was run without --workspace in cow mode)"),
    };
    if for_change && is_running(&dir) {
        bail!("sandbox {name} is running; its layer can change only once it has ended");
    }
    layer_stack(&dir, &workspace)
}
