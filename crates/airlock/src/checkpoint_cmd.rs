//! `airlock checkpoint NAME [LABEL]`, `airlock checkpoints NAME [--json]`, `airlock rollback NAME LABEL`.
//!
//! A checkpoint freezes the sandbox's upper directory as a read-only layer: `upper/` is renamed to
//! `layers/N-LABEL/` and a fresh empty `upper/` (and an emptied `work/`) take its place. The next run stacks the
//! frozen layers under the new upper (`lowerdir=layers/N:...:layers/1:WORKSPACE`), so a checkpoint costs one
//! rename whatever the workspace's size. A rollback to LABEL deletes the layers newer than it and empties
//! `upper/`: the workspace shows exactly what it showed right after `airlock checkpoint NAME LABEL`.
//!
//! Both change the layers, which overlayfs forbids while they are mounted: they refuse while the sandbox runs.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::state;

/// How many checkpoints one sandbox stacks (the overlay's lower layers, opened into a fixed-size array).
const MAX_CHECKPOINTS: usize = runtime::plan::MAX_FROZEN_LAYERS;

/// Claims the sandbox's layer for a checkpoint or rollback; refuses while it runs.
fn claim(name: &str, what: &str) -> Result<state::ClaimedLayer> {
    policy::names::validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let dir = state::sandbox_dir(name);
    if dir.is_dir() && state::is_running(&dir) {
        bail!(
            "sandbox {name} is running: {what} of a running sandbox is not supported yet (its overlay is mounted); \
             {what} once it has ended"
        );
    }
    state::claim_layer(name)
}

pub fn checkpoint(name: &str, label: Option<&str>) -> Result<i32> {
    let claim = claim(name, "checkpoint")?;
    let dir = &claim.dir;
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
    fs::create_dir(&upper).with_context(|| format!("cannot create {}", upper.display()))?;
    fs::set_permissions(&upper, fs::Permissions::from_mode(owner.mode() & 0o7777))
        .with_context(|| format!("cannot set the mode of {}", upper.display()))?;
    std::os::unix::fs::lchown(&upper, Some(owner.uid()), Some(owner.gid()))
        .with_context(|| format!("cannot set the owner of {}", upper.display()))?;
    empty_work(&root)?;
    println!("checkpoint {label} of sandbox {name}");
    Ok(0)
}

/// Empties the overlay's `work/` (its `work/work` has mode 000, which its owner opens up first).
fn empty_work(dir: &std::path::Path) -> Result<()> {
    let work = dir.join("work");
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
    let claim = claim(name, "rollback")?;
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

/// `2026-11-29 21:40:07` (UTC) for a unix time.
fn utc_time(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::utc_time;

    #[test]
    fn unix_times_read_as_utc() {
        assert_eq!(utc_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(1_798_580_407.5), "2026-12-29 21:40:07");
        assert_eq!(utc_time(951_782_400.0), "2000-02-29 00:00:00");
    }
}
