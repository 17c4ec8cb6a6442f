//! `airlock ls` and `airlock rm`: the sandboxes that keep state under their name.

use anyhow::{anyhow, bail, Result};
use policy::names::validate_sandbox_name;
use serde_json::json;

use crate::cli::RmArgs;
use crate::state;

pub fn ls(json_output: bool) -> Result<i32> {
    let mut rows = Vec::new();
    for name in state::sandbox_names(&state::state())? {
        let dir = state::sandbox_dir(&name);
        let record = state::read_record(&dir).ok();
        let running = state::is_running(&dir);
        let changes = record.as_ref().and_then(|r| pending_changes(&dir, r));
        rows.push(json!({
            "name": name,
            "state": if running { "running" } else { "exited" },
            "workspace": record.as_ref().and_then(|r| r.workspace.clone()),
            "workspace_mode": record.as_ref().and_then(|r| r.workspace_mode.clone()),
            "exit_code": if running { None } else { record.as_ref().and_then(|r| r.exit_code) },
            "pending_changes": changes,
        }));
    }
    if json_output {
        println!("{}", serde_json::to_string_pretty(&json!({ "sandboxes": rows }))?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no sandboxes");
        return Ok(0);
    }
    println!("{:<24} {:<8} {:<8} {:<8} WORKSPACE", "NAME", "STATE", "MODE", "CHANGES");
    for row in rows {
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_else(|| "-".to_string());
        let changes = row["pending_changes"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "-".to_string());
        println!(
            "{:<24} {:<8} {:<8} {:<8} {}",
            text(&row["name"]),
            text(&row["state"]),
            text(&row["workspace_mode"]),
            changes,
            text(&row["workspace"])
        );
    }
    Ok(0)
}

/// `airlock rm [--force] NAME...` and `airlock rm --all [--force]`.
pub fn rm(args: &RmArgs) -> Result<i32> {
    if args.all {
        return remove_all(args.force);
    }
    for name in &args.names {
        validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
        let dir = state::sandbox_dir(name);
        if !dir.exists() {
            bail!("no sandbox named {name} (see `airlock ls`)");
        }
        if state::is_running(&dir) {
            if !args.force {
                bail!("sandbox {name} is running; it is removed only once it has ended (`airlock rm --force {name}` stops it first)");
            }
            stop_for_removal(name, &dir)?;
        }
        remove(name, &dir)?;
    }
    Ok(0)
}

/// `airlock prune`: every ended sandbox removed; running ones stay.
pub fn prune() -> Result<i32> {
    remove_all(false)
}

/// Every ended sandbox removed, and with `force` every running one stopped and removed too. Goes on past a
/// sandbox it cannot remove (saying so) and fails at the end if there was one.
fn remove_all(force: bool) -> Result<i32> {
    let mut failed = Vec::new();
    for name in state::sandbox_names(&state::state())? {
        let dir = state::sandbox_dir(&name);
        let removed = if state::is_running(&dir) {
            if !force {
                continue;
            }
            stop_for_removal(&name, &dir).and_then(|()| remove(&name, &dir))
        } else {
            remove(&name, &dir)
        };
        if let Err(e) = removed {
            crate::say(&format!("cannot remove sandbox {name}: {}", crate::one_line(&e)));
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("{} sandbox(es) not removed: {}", failed.len(), failed.join(", "));
    }
    Ok(0)
}

/// `airlock stop NAME` for `rm --force`: a sandbox that ended meanwhile (its command, its timeout) is as good.
fn stop_for_removal(name: &str, dir: &state::SandboxDir) -> Result<()> {
    match crate::longlived::stop(name) {
        Err(_) if !state::is_running(dir) => Ok(()),
        other => other.map(drop),
    }
}

/// Removes the ended sandbox `name`, once its supervisor has finished.
fn remove(name: &str, dir: &state::SandboxDir) -> Result<()> {
    wait_for_supervisor_exit(name, dir)?;
    store::sandbox::remove_sandbox(dir)?;
    Ok(())
}

/// How long `rm` waits for an ended sandbox's supervisor to finish its last writes.
const SUPERVISOR_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until the sandbox's supervisor (if it had one) has exited. A sandbox is marked ended before its
/// supervisor removes the cgroup and writes its last records (stats, the audit log's end) into the sandbox's
/// directory; removing the directory meanwhile would race those writes ("Directory not empty").
fn wait_for_supervisor_exit(name: &str, dir: &state::SandboxDir) -> Result<()> {
    let record = state::read_record(dir)?;
    let (Some(pid), Some(start)) = (record.supervisor_pid, record.supervisor_start_time) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    while runtime::host::process_alive(pid, start) {
        if started.elapsed() > SUPERVISOR_EXIT_WAIT {
            bail!(
                "sandbox {name} has ended but its supervisor (pid {pid}) is still finishing after {}s; try again",
                SUPERVISOR_EXIT_WAIT.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// How many changes a sandbox's copy-on-write layer holds (`None` without a layer, or when it cannot be read).
fn pending_changes(dir: &state::SandboxDir, record: &state::SandboxRecord) -> Option<u64> {
    let upper = dir.layer().ok()?.upper();
    let lower = record.workspace.as_ref()?;
    if !upper.is_dir() {
        return None;
    }
    let stack = store::sandbox::layer_stack(dir, lower).ok()?;
    store::layer::diff_stack(&stack, &[]).ok().map(|changes| changes.len() as u64)
}
