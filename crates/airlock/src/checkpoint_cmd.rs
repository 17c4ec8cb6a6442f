//! `airlock checkpoint NAME [LABEL]`, `airlock checkpoints NAME [--json]`, `airlock rollback NAME LABEL`: the
//! front end of the workspace store's checkpoint transactions (`store::checkpoint`, which documents how a
//! checkpoint and a rollback change the layers, of a stopped or a running sandbox).

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::state;

pub fn checkpoint(name: &str, label: Option<&str>) -> Result<i32> {
    let state = state::state();
    let taken = store::checkpoint::take(&state, name, label)?;
    // The audit log's summary of what this checkpoint froze (bounded: a checkpoint stays a rename).
    session::recorder::record_checkpoint(&state, name, &taken.label, &taken.frozen, &taken.workspace);
    if taken.running {
        println!("checkpoint {} of sandbox {name} (running: new commands see the workspace as it is)", taken.label);
    } else {
        println!("checkpoint {} of sandbox {name}", taken.label);
    }
    Ok(0)
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
    let state = state::state();
    // Only for a sandbox with a copy-on-write workspace (a clear error otherwise).
    store::sandbox::layer_of(&state, name, false)?;
    let mut docs = Vec::new();
    for c in store::checkpoint::checkpoints(&state.sandbox(name))? {
        let changes = store::layer::count_entries(&c.dir)
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
    let state = state::state();
    let running = store::checkpoint::roll_back(&state, name, label)?;
    // The layer went back: what it held since LABEL is gone, so the log is the only trace of when and to what.
    session::recorder::record_workspace(&state, name, "rollback", Some(label), &[], running);
    if running {
        println!(
            "sandbox {name} rolled back to checkpoint {label} (running: new commands see the workspace as it was)"
        );
    } else {
        println!("sandbox {name} rolled back to checkpoint {label}");
    }
    Ok(0)
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
