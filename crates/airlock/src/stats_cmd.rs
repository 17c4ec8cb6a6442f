//! `airlock stats NAME [--json]`: resource use now and peak, from the sandbox's cgroup while it runs, and the
//! final numbers airlock kept when a named run ended.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use policy::names::validate_sandbox_name;
use runtime::cgroups::{self, format_bytes};
use serde_json::Value;
use session::stats::stats_json;

/// The file holding a named sandbox's final numbers.
pub fn final_stats_path(name: &str) -> PathBuf {
    crate::state::sandbox_dir(name).stats_file()
}

pub fn run(name: &str, json_output: bool) -> Result<i32> {
    validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let live = cgroups::detect_layout(std::path::Path::new(cgroups::SYS_FS_CGROUP))
        .ok()
        .and_then(|layout| cgroups::find_sandbox_cgroup(&layout, name).ok().flatten());
    let dir = crate::state::sandbox_dir(name);
    let doc = match live {
        Some(cgroup) => stats_json(name, "running", &cgroup.stats()?, None),
        // Running without a cgroup: airlock gives a sandbox one only for --memory, --pids or --cpus. What its
        // processes use now still shows in /proc.
        None if dir.exists() && crate::state::is_running(&dir) => without_cgroup(name, &dir),
        None => {
            let path = final_stats_path(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(_) if dir.exists() => {
                    crate::say(&format!(
                        "sandbox {name} has ended and kept no numbers (it had no --memory, --pids or --cpus limit, \
                         so no cgroup counted them)"
                    ));
                    return Ok(i32::from(crate::EXIT_FAILED));
                }
                Err(_) => bail!("no sandbox named {name} (see `airlock ls`)"),
            };
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?
        }
    };
    if json_output {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_human(&doc);
    }
    Ok(0)
}

/// Why a running sandbox has no cgroup numbers (`note` in the JSON, a line of the text).
const NO_CGROUP_NOTE: &str = "no cgroup: the sandbox has no --memory, --pids or --cpus limit, so airlock did not give \
     it one; the numbers are its processes now, from /proc (no peak, no OOM count)";

/// What a VM sandbox's numbers are.
const VM_NOTE: &str = "a VM (--isolation vm): the numbers are its QEMU process's (the guest's memory and CPU time), \
     from /proc";

/// Whether the running sandbox `name` is a VM (`--isolation vm` in its stored profile).
pub(crate) fn is_vm(name: &str) -> bool {
    match session::handle::lookup(&crate::state::state(), name) {
        Ok(session::handle::Lookup::Running(sandbox)) => {
            sandbox.profile().is_ok_and(|p| crate::run::vm_isolation(&p).unwrap_or(false))
        }
        _ => false,
    }
}

/// A running sandbox without a cgroup: its processes' resident memory, count and CPU time now, from /proc
/// (`source: "proc"`). A sandbox started by `run --name` has no recorded init: only the note.
fn without_cgroup(name: &str, dir: &crate::state::SandboxDir) -> Value {
    let init = crate::state::read_record(dir)
        .ok()
        .and_then(|r| r.init_pid.zip(r.init_start_time))
        .filter(|&(pid, start)| runtime::host::process_alive(pid, start))
        .map(|(pid, _)| pid);
    // `--isolation vm`: the recorded init is the guest's QEMU, in the host's pid namespace: the numbers are its
    // own (the whole guest's memory and CPU time), not those of the host's other processes.
    let vm = is_vm(name);
    let processes = |init| if vm { vec![init] } else { sandbox_processes(init) };
    let usage = init.map(processes).map(|pids| proc_usage(&pids)).unwrap_or_default();
    let mut doc = stats_json(name, "running", &usage, None);
    doc["source"] = Value::from("proc");
    doc["note"] = Value::from(if vm { VM_NOTE } else { NO_CGROUP_NOTE });
    doc
}

/// The processes of the sandbox whose init is `init`: those in its pid namespace (execs included, which are not
/// init's descendants), else, when that namespace cannot be read, init and its descendants.
fn sandbox_processes(init: i32) -> Vec<i32> {
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .map(|entries| entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    if let Some(own) = ns(init) {
        return all.into_iter().filter(|&pid| ns(pid).as_ref() == Some(&own)).collect();
    }
    let parent = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse::<i32>().ok()
    };
    let mut found = vec![init];
    let mut grew = true;
    while grew {
        grew = false;
        for &pid in &all {
            if !found.contains(&pid) && parent(pid).is_some_and(|p| found.contains(&p)) {
                found.push(pid);
                grew = true;
            }
        }
    }
    found
}

/// The processes' summed resident memory (`VmRSS`), their count, and their CPU time (`/proc/PID/schedstat`).
fn proc_usage(pids: &[i32]) -> cgroups::CgroupStats {
    let mut rss = 0u64;
    let mut cpu_ns = 0u64;
    let mut count = 0u64;
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        count += 1;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        rss += kib.unwrap_or(0) * 1024;
        let ns = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        cpu_ns += ns.unwrap_or(0);
    }
    cgroups::CgroupStats {
        memory_current: Some(rss),
        pids_current: Some(count),
        cpu_usage_usec: Some(cpu_ns / 1000),
        ..Default::default()
    }
}

fn print_human(doc: &Value) {
    let num = |v: &Value| v.as_u64();
    let bytes = |v: &Value| num(v).map(format_bytes).unwrap_or_else(|| "-".to_string());
    let count = |v: &Value| num(v).map(|n| n.to_string()).unwrap_or_else(|| "-".to_string());
    let unlimited = |v: &Value, f: &dyn Fn(&Value) -> String| if v.is_null() { "none".to_string() } else { f(v) };
    println!("sandbox  {}  ({})", doc["name"].as_str().unwrap_or("?"), doc["state"].as_str().unwrap_or("?"));
    if let Some(code) = doc["exit_code"].as_i64() {
        println!("exit     {code}");
    }
    let m = &doc["memory"];
    println!(
        "memory   now {}  peak {}  limit {}  oom kills {}",
        bytes(&m["current_bytes"]),
        bytes(&m["peak_bytes"]),
        unlimited(&m["limit_bytes"], &bytes),
        count(&m["oom_kills"])
    );
    let p = &doc["pids"];
    println!(
        "pids     now {}  peak {}  limit {}  limit hits {}",
        count(&p["current"]),
        count(&p["peak"]),
        unlimited(&p["limit"], &count),
        count(&p["limit_hits"])
    );
    let cpu = num(&doc["cpu"]["usage_usec"]).map(|us| format!("{:.3}s", us as f64 / 1e6)).unwrap_or_else(|| "-".into());
    println!("cpu      {cpu}");
    if let Some(note) = doc["note"].as_str() {
        println!("note     {note}");
    }
}
