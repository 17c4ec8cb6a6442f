//! `airlock stats NAME [--json]`: resource use now and peak, from the sandbox's cgroup while it runs, and the
//! final numbers airlock kept when a named run ended.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
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
    let doc = match live {
        Some(cgroup) => stats_json(name, "running", &cgroup.stats()?, None),
        None => {
            let path = final_stats_path(name);
            let text = std::fs::read_to_string(&path).map_err(|_| {
                anyhow!("no sandbox named {name:?}: none is running with limits, and no finished run with --name {name} kept its numbers")
            })?;
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
}
